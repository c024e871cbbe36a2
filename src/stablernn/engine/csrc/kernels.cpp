// stablernn's native recurrence kernels (compiled on first use by stablernn/engine/native.py).
//
// One sequential loop per sequence in C++: the matrix products call ATen (MKL on x86 CPUs), the
// elementwise work of a step is one fused pass over raw memory, and the large tensors the loop
// writes (states, stored slopes, per-step gradients) come from a small cache of memory blocks so
// that a training step does not pay the operating system's page faults for ~100 MB of fresh memory
// every time (figures in docs/performance.md). Each intra-op thread runs the
// loop for its own block of batch rows (``over_row_blocks``); built with OpenMP (see
// :func:`stablernn.engine.native._flag_sets`).
//
// Maths (row-vector states, one time step ``t``; the Python docstrings cite the papers):
//
// - Lipschitz RNN, Euler (paper 002, eq. 9): ``z = u_t + h W^T``, ``d = tanh(z)``,
//   ``h' = eps d + h P`` with ``P = (I + eps alpha A)^T``.
//   Backward: ``dz = eps (1 - d^2) g``, ``g_prev = G_prev + [g | dz] [P^T ; W]``; after the loop
//   ``dP = H_prev^T G``, ``dW^T = H_prev^T DZ``, ``du = DZ``.
// - Lipschitz RNN, RK2 (paper 002, eq. 10, explicit midpoint): two such products per step (see
//   the RK2 section).
// - Rate subnetworks with feedback, splitting step: see its section.
// - Rate subnetworks with feedback, Euler (paper 000, eq. 5 with eq. 1 parts):
//   ``x' = x P + dt (blocks(phi(x)) + u_t)`` with ``P = (1 - dt) I + dt L^T`` and
//   ``blocks(y)_k = y_k W_k^T``.
//   Backward: ``gu = dt g``, ``g_prev = G_prev + g P^T + phi'(x) * blocks^T(gu)``; after the loop
//   ``dL^T = X_prev^T GU``, ``d(W_k^T) = phi(X_prev)_k^T GU_k``, ``du = GU``.
//
// float32 uses a rational tanh (the minimax approximation Eigen uses, clamped at |x| = 7.9053):
// at most about 3 ulp, 3.6e-7 absolute (``torch.tanh``: 3e-8), checked in the tests; float64 uses
// ``std::tanh``.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <ATen/Config.h>
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <new>
#include <type_traits>

namespace {

using at::Tensor;

// ------------------------------------------------------------------ memory block cache
struct Pool {
  std::mutex mutex;
  std::multimap<size_t, void*> blocks;
  size_t cached = 0;
  size_t limit = size_t(1) << 30;
  size_t hits = 0, misses = 0;
};

Pool& pool() {
  static Pool* instance = new Pool();  // never destroyed: tensors may be freed at exit
  return *instance;
}

void pool_release(void* ptr, size_t bytes) {
  Pool& p = pool();
  {
    std::lock_guard<std::mutex> lock(p.mutex);
    if (p.cached + bytes <= p.limit) {
      p.blocks.emplace(bytes, ptr);
      p.cached += bytes;
      return;
    }
  }
  std::free(ptr);
}

Tensor pooled_empty(at::IntArrayRef sizes, const at::TensorOptions& options) {
  int64_t numel = 1;
  for (auto s : sizes) numel *= s;
  size_t bytes = size_t(numel) * c10::elementSize(c10::typeMetaToScalarType(options.dtype()));
  if (!options.device().is_cpu() || bytes < (size_t(1) << 20)) return at::empty(sizes, options);
  bytes = (bytes + 4095) & ~size_t(4095);
  void* ptr = nullptr;
  Pool& p = pool();
  {
    std::lock_guard<std::mutex> lock(p.mutex);
    auto it = p.blocks.find(bytes);
    if (it != p.blocks.end()) {
      ptr = it->second;
      p.blocks.erase(it);
      p.cached -= bytes;
      ++p.hits;
    } else {
      ++p.misses;
    }
  }
  if (ptr == nullptr) {
    ptr = std::aligned_alloc(4096, bytes);
    if (ptr == nullptr) throw std::bad_alloc();
  }
  return at::from_blob(ptr, sizes, [bytes](void* q) { pool_release(q, bytes); }, options);
}

void empty_cache() {
  Pool& p = pool();
  std::lock_guard<std::mutex> lock(p.mutex);
  for (auto& entry : p.blocks) std::free(entry.second);
  p.blocks.clear();
  p.cached = 0;
}

void set_cache_limit(int64_t bytes) {
  Pool& p = pool();
  std::lock_guard<std::mutex> lock(p.mutex);
  p.limit = size_t(bytes < 0 ? 0 : bytes);
}

std::vector<int64_t> cache_stats() {
  Pool& p = pool();
  std::lock_guard<std::mutex> lock(p.mutex);
  return {int64_t(p.cached), int64_t(p.limit), int64_t(p.hits), int64_t(p.misses)};
}

// ------------------------------------------------------------------ scalar functions
inline __attribute__((always_inline)) float tanh_fast(float a) {
  float x = a > 7.90531110763549805f ? 7.90531110763549805f : a;
  x = x < -7.90531110763549805f ? -7.90531110763549805f : x;
  const float x2 = x * x;
  float p = -2.76076847742355e-16f;
  p = p * x2 + 2.00018790482477e-13f;
  p = p * x2 + -8.60467152213735e-11f;
  p = p * x2 + 5.12229709037114e-08f;
  p = p * x2 + 1.48572235717979e-05f;
  p = p * x2 + 6.37261928875436e-04f;
  p = p * x2 + 4.89352455891786e-03f;
  p = p * x;
  float q = 1.19825839466702e-06f;
  q = q * x2 + 1.18534705686654e-04f;
  q = q * x2 + 2.26843463243900e-03f;
  q = q * x2 + 4.89352518554385e-03f;
  return p / q;
}

inline __attribute__((always_inline)) float tanh_of(float x) { return tanh_fast(x); }
inline __attribute__((always_inline)) double tanh_of(double x) { return std::tanh(x); }

enum Activation : int64_t { RELU = 0, TANH = 1, SIGMOID = 2, SOFTPLUS = 3 };

template <typename S>
inline __attribute__((always_inline)) S sigmoid_of(S x) {
  return S(1) / (S(1) + std::exp(-x));
}

template <typename S, int64_t A>
inline __attribute__((always_inline)) S act(S x) {
  if constexpr (A == RELU) return x > S(0) ? x : S(0);
  else if constexpr (A == TANH) return tanh_of(x);
  else if constexpr (A == SIGMOID) return sigmoid_of(x);
  else return x > S(20) ? x : std::log1p(std::exp(x));  // torch softplus, beta 1, threshold 20
}

// derivative from the pre-activation x, as torch's backward formulas compute it
template <typename S, int64_t A>
inline __attribute__((always_inline)) S dact(S x) {
  if constexpr (A == RELU) return x > S(0) ? S(1) : S(0);
  else if constexpr (A == TANH) { S y = tanh_of(x); return S(1) - y * y; }
  else if constexpr (A == SIGMOID) { S y = sigmoid_of(x); return y * (S(1) - y); }
  else { if (x > S(20)) return S(1); S z = std::exp(x); return z / (z + S(1)); }
}

// ------------------------------------------------------------------ input layer, fused
// Row b of U x_t + b for small input sizes, into acc (n values): bias + sum_f x[b, f] U^T[f, :]
template <typename S>
inline __attribute__((always_inline)) void input_row(int64_t n, int64_t F, const S* __restrict x,
    const S* __restrict winT, const S* __restrict bias, S* __restrict acc) {
  if (bias != nullptr) { for (int64_t i = 0; i < n; ++i) acc[i] = bias[i]; }
  else { for (int64_t i = 0; i < n; ++i) acc[i] = S(0); }
  for (int64_t f = 0; f < F; ++f) {
    const S xv = x[f]; const S* w = winT + f * n;
    for (int64_t i = 0; i < n; ++i) acc[i] += xv * w[i];
  }
}

// ------------------------------------------------------------------ Lipschitz elementwise
// hm (B, 2N) = h [P | W^T]. Row by row: z = hm[:, N:] + u (u given as rows of (B, N), or from the
// fused input layer); d = tanh(z); out = eps d + hm[:, :N]; drive = d when given.
template <typename S>
inline __attribute__((always_inline)) void lip_fwd_body(int64_t b0, int64_t b1, int64_t n, const S* __restrict hm,
    const S* __restrict u, int64_t F, const S* __restrict x, const S* __restrict winT,
    const S* __restrict bias, S eps, S* __restrict out, S* __restrict drive, S* __restrict acc) {
  for (int64_t b = b0; b < b1; ++b) {
    const S* a = hm + b * 2 * n; const S* zr = a + n; S* o = out + b * n;
    const S* ur;
    if (u != nullptr) ur = u + b * n;
    else { input_row<S>(n, F, x + b * F, winT, bias, acc); ur = acc; }
    if (drive != nullptr) {
      S* dr = drive + b * n;
      for (int64_t i = 0; i < n; ++i) {
        const S d = tanh_of(zr[i] + ur[i]);
        o[i] = eps * d + a[i];
        dr[i] = d;
      }
    } else {
      for (int64_t i = 0; i < n; ++i) o[i] = eps * tanh_of(zr[i] + ur[i]) + a[i];
    }
  }
}

// g (B, N) -> gz (B, 2N): rows [g | eps (1 - d^2) g]
template <typename S>
inline __attribute__((always_inline)) void lip_bwd_body(int64_t b0, int64_t b1, int64_t n,
    const S* __restrict g, S* __restrict gz, const S* __restrict d, S eps) {
  for (int64_t b = b0; b < b1; ++b) {
    const S* gr = g + b * n; S* row = gz + b * 2 * n; const S* dr = d + b * n;
    for (int64_t i = 0; i < n; ++i) {
      row[i] = gr[i];
      row[n + i] = eps * (S(1) - dr[i] * dr[i]) * gr[i];
    }
  }
}

// Function multi-versioning on x86 (AVX-512, AVX2, baseline chosen at load time); other CPUs, or
// -DSTABLERNN_PORTABLE, get one portable build of the same code.
#if (defined(__x86_64__) || defined(__i386__)) && !defined(STABLERNN_PORTABLE)
#define CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define CLONES
#endif

CLONES void lip_fwd_f(int64_t b0, int64_t b1, int64_t n, const float* hm, const float* u, int64_t F, const float* x,
                      const float* w, const float* bias, float eps, float* o, float* d, float* acc) {
  lip_fwd_body<float>(b0, b1, n, hm, u, F, x, w, bias, eps, o, d, acc); }
void lip_fwd_d(int64_t b0, int64_t b1, int64_t n, const double* hm, const double* u, int64_t F, const double* x,
               const double* w, const double* bias, double eps, double* o, double* d, double* acc) {
  lip_fwd_body<double>(b0, b1, n, hm, u, F, x, w, bias, eps, o, d, acc); }
CLONES void lip_bwd_f(int64_t b0, int64_t b1, int64_t n, const float* g, float* gz, const float* d, float eps) { lip_bwd_body<float>(b0, b1, n, g, gz, d, eps); }
void lip_bwd_d(int64_t b0, int64_t b1, int64_t n, const double* g, double* gz, const double* d, double eps) { lip_bwd_body<double>(b0, b1, n, g, gz, d, eps); }

inline void lip_fwd_ew(int64_t b0, int64_t b1, int64_t n, const float* hm, const float* u, int64_t F, const float* x,
                       const float* w, const float* bias, double eps, float* o, float* d, float* acc) {
  lip_fwd_f(b0, b1, n, hm, u, F, x, w, bias, float(eps), o, d, acc); }
inline void lip_fwd_ew(int64_t b0, int64_t b1, int64_t n, const double* hm, const double* u, int64_t F, const double* x,
                       const double* w, const double* bias, double eps, double* o, double* d, double* acc) {
  lip_fwd_d(b0, b1, n, hm, u, F, x, w, bias, eps, o, d, acc); }
inline void lip_bwd_ew(int64_t b0, int64_t b1, int64_t n, const float* g, float* gz, const float* d, double eps) { lip_bwd_f(b0, b1, n, g, gz, d, float(eps)); }
inline void lip_bwd_ew(int64_t b0, int64_t b1, int64_t n, const double* g, double* gz, const double* d, double eps) { lip_bwd_d(b0, b1, n, g, gz, d, eps); }

// Elementwise work of one step over the batch rows, split across the intra-op threads when
// there is enough of it (fn(b0, b1, scratch) with a per-chunk scratch row of n values).
// (The split needs the extension built with OpenMP, as torch is: without -fopenmp, ATen's
// parallel_for compiled here runs its chunks one after another.)
bool g_parallel = true;

template <typename S, typename Fn>
void over_rows(int64_t B, int64_t n, Fn&& fn) {
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(n, 1));
  if (!g_parallel || B <= grain || at::get_num_threads() < 2 || at::in_parallel_region()) {
    std::vector<S> scratch(n);
    fn(int64_t(0), B, scratch.data());
    return;
  }
  at::parallel_for(0, B, grain, [&](int64_t b0, int64_t b1) {
    std::vector<S> scratch(n);
    fn(b0, b1, scratch.data());
  });
}

// Batch rows never interact in a recurrence, so each intra-op thread can run a whole stretch of
// steps for its own block of rows: single-threaded GEMMs on its rows, its elementwise pass on
// data it wrote itself, and no synchronisation between steps. Measured at B = N = 128 on two
// cores: 36 us per forward step against 64 us with two-threaded GEMMs on all rows and a
// single-threaded elementwise pass (the threads' per-step hand-over costs more than the work).
// fn(block, r0, r1) for blocks of at least max(16, N / 8) rows; one block (all rows, GEMMs on
// all threads) when the batch is too small to split. (Measured, T = 200, 2 threads: 1.2-1.6x
// faster at N = 32-128 from 16 rows per block; at N = 512, 0.9x with 16 rows, 1.0x with 64.)
int64_t row_blocks(int64_t B, int64_t N) {
  if (!g_parallel || at::in_parallel_region()) return 1;
  const int64_t min_rows = std::max<int64_t>(16, N / 8);
  return std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), B / min_rows));
}

// The tensors here never need autograd (the Functions in Python own the graph); worker threads
// start with grad mode on, so each block enters below the autograd keys, which also skips their
// per-call dispatch cost.
template <typename Fn>
void over_row_blocks(int64_t B, int64_t blocks, Fn&& fn) {
  if (blocks <= 1) {
    at::AutoDispatchBelowADInplaceOrView guard;
    fn(int64_t(0), int64_t(0), B);
    return;
  }
  at::parallel_for(0, blocks, 1, [&](int64_t c0, int64_t c1) {
    at::AutoDispatchBelowADInplaceOrView guard;
    for (int64_t c = c0; c < c1; ++c) fn(c, B * c / blocks, B * (c + 1) / blocks);
  });
}

// Off: one block of rows and one elementwise chunk per step (how the figures above were compared).
void set_parallel(bool on) { g_parallel = on; }

void check_cpu(const Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu(), "stablernn engine (native): ", name, " must be on the CPU");
  TORCH_CHECK(t.is_contiguous(), "stablernn engine (native): ", name, " must be contiguous");
}

template <typename S>
const S* ptr_or_null(const Tensor& t) { return t.numel() > 0 ? t.data_ptr<S>() : nullptr; }

// Gradients of the fused input layer, accumulated step by step while the step's input-side
// gradient rows d (B rows of n, row stride ldd) are still in cache: per step, partial sums over
// the batch in the working precision (pdb = sum_b d[b, :], pdw[f, :] = sum_b x[b, f] d[b, :]);
// across steps in double.
template <typename S>
inline __attribute__((always_inline)) void input_grad_partials(int64_t B, int64_t n, int64_t F,
    const S* __restrict d, int64_t ldd, const S* __restrict x, S* __restrict pdb, S* __restrict pdw) {
  for (int64_t i = 0; i < n * (F + 1); ++i) pdb[i] = S(0);  // pdw follows pdb in memory
  for (int64_t b = 0; b < B; ++b) {
    const S* dr = d + b * ldd;
    for (int64_t i = 0; i < n; ++i) pdb[i] += dr[i];
    for (int64_t f = 0; f < F; ++f) {
      const S xv = x[b * F + f];
      S* w = pdw + f * n;
      for (int64_t i = 0; i < n; ++i) w[i] += xv * dr[i];
    }
  }
}

CLONES void input_partials_f(int64_t B, int64_t n, int64_t F, const float* d, int64_t ldd,
                             const float* x, float* p) { input_grad_partials<float>(B, n, F, d, ldd, x, p, p + n); }
void input_partials_d(int64_t B, int64_t n, int64_t F, const double* d, int64_t ldd,
                      const double* x, double* p) { input_grad_partials<double>(B, n, F, d, ldd, x, p, p + n); }
inline void input_partials(int64_t B, int64_t n, int64_t F, const float* d, int64_t ldd, const float* x, float* p) { input_partials_f(B, n, F, d, ldd, x, p); }
inline void input_partials(int64_t B, int64_t n, int64_t F, const double* d, int64_t ldd, const double* x, double* p) { input_partials_d(B, n, F, d, ldd, x, p); }

struct InputGrads {
  Tensor acc;       // double: [sum d (n) | sum x_f d (F x n)]
  Tensor partial;   // one step's partial sums in the working precision
  int64_t n, F;
  InputGrads(int64_t n_, int64_t F_, const at::TensorOptions& opts)
      : acc(at::zeros({(F_ + 1) * n_}, opts.dtype(at::kDouble))),
        partial(at::empty({(F_ + 1) * n_}, opts)), n(n_), F(F_) {}
  template <typename S>
  void add(int64_t B, const S* d, int64_t ldd, const S* x) {
    S* p = partial.data_ptr<S>();
    input_partials(B, n, F, d, ldd, x, p);
    double* a = acc.data_ptr<double>();
    for (int64_t i = 0; i < (F + 1) * n; ++i) a[i] += double(p[i]);
  }
  // grads of (x, U, b): x <- D U over all rows when need_x (D: T*B rows of n, any row stride)
  std::vector<Tensor> finish(const Tensor& D, const Tensor& x, const Tensor& win,
                             const Tensor& bias, bool need_x) const {
    auto dtype = x.scalar_type();
    // copies (to(..., copy=true)): in double, views of acc would alias each other
    Tensor grad_w = acc.narrow(0, n, F * n).reshape({F, n}).t().to(dtype, false, true)
                        .contiguous();
    Tensor grad_b = bias.numel() > 0 ? acc.narrow(0, 0, n).to(dtype, false, true)
                                     : at::empty({0}, x.options());
    Tensor grad_x = need_x ? at::mm(D, win).reshape(x.sizes()) : at::empty({0}, x.options());
    return {grad_x, grad_w, grad_b};
  }
};

#if AT_MKL_ENABLED()
// MKL's batched GEMM as torch's MKL builds export it (LP64: 32-bit integers, as ATen calls it).
// Called directly it spares ATen's dispatch and views, about 2 us a step and 1-3% of a training
// step (docs/performance.md); weak, so that a torch without the symbol loads and uses ATen.
extern "C" void cblas_sgemm_batch(int layout, const int* transa, const int* transb, const int* m,
    const int* n, const int* k, const float* alpha, const float** a, const int* lda,
    const float** b, const int* ldb, const float* beta, float** c, const int* ldc,
    int group_count, const int* group_size) __attribute__((weak));
#endif
bool g_direct_gemm = true;  // off: every product through ATen (for side-by-side comparisons)
void set_direct_gemm(bool on) { g_direct_gemm = on; }
bool direct_gemm_available() {
#if AT_MKL_ENABLED()
  return cblas_sgemm_batch != nullptr;
#else
  return false;
#endif
}

// step_product(out, rows, addend[, R]): out (R, n) <- [addend +] rows (R, k) @ right (k, n), all
// contiguous, given as tensors or as pointers (the Lipschitz loops pass pointers: a step's tensor
// views cost microseconds, most of a small model's step): one step's product, `right` fixed for
// the sequence. With R even, as a batch of two products of R/2 rows against `right`: MKL's
// batched GEMM, called directly (above) or through ATen with `right` expanded (no copy), costs
// less per call than its plain GEMM with every thread busy (measured: docs/performance.md).
struct StepProduct {
  Tensor right, batched;  // (k, n), and the same expanded to (2, k, n) once per sequence
  explicit StepProduct(const Tensor& right_)
      : right(right_.contiguous()),
        batched(right.unsqueeze(0).expand({2, right.size(0), right.size(1)})) {}

  // out, rows and addend (or null): contiguous (R, n), (R, k) and (R, n) blocks of the
  // sequence's dtype, as pointers (the loops pass pointers, sparing each step tensor views)
  template <typename S>
  void operator()(S* out, const S* rows, const S* addend, int64_t R) const {
    const int64_t k = right.size(0), n = right.size(1);
#if AT_MKL_ENABLED()
    if constexpr (std::is_same<S, float>::value) {
      if (g_direct_gemm && cblas_sgemm_batch != nullptr && R >= 2 && R % 2 == 0) {
        float beta = 0.f;
        if (addend != nullptr) {  // out <- addend, then out += rows @ right
          if (addend != out) std::memcpy(out, addend, R * n * sizeof(float));
          beta = 1.f;
        }
        const int half = int(R / 2), ni = int(n), ki = int(k), two = 2, no_trans = 111;
        const float alpha = 1.f;
        const float* a[2] = {rows, rows + (R / 2) * k};
        const float* b[2] = {right.data_ptr<float>(), right.data_ptr<float>()};
        float* cs[2] = {out, out + (R / 2) * n};
        cblas_sgemm_batch(101 /* row major */, &no_trans, &no_trans, &half, &ni, &ki, &alpha, a,
                          &ki, b, &ni, &beta, cs, &ni, 1, &two);
        return;
      }
    }
#endif
    const auto opts = right.options();
    Tensor o = at::from_blob(out, {R, n}, opts);
    Tensor r = at::from_blob(const_cast<S*>(rows), {R, k}, opts);
    Tensor add = addend == nullptr ? Tensor()
                                   : at::from_blob(const_cast<S*>(addend), {R, n}, opts);
    if (R < 2 || R % 2 != 0) {
      if (add.defined()) at::addmm_out(o, add, r, right);
      else at::mm_out(o, r, right);
      return;
    }
    Tensor out2 = o.view({2, R / 2, n});
    Tensor rows2 = r.view({2, R / 2, k});
    if (add.defined()) at::baddbmm_out(out2, add.view({2, R / 2, n}), rows2, batched);
    else at::bmm_out(out2, rows2, batched);
  }

  // the same on contiguous tensors
  void operator()(Tensor out, const Tensor& rows, const Tensor& addend) const {
    TORCH_CHECK(out.is_contiguous() && rows.is_contiguous()
                && (!addend.defined() || addend.is_contiguous()),
                "stablernn engine: a step product's operands must be contiguous");
    AT_DISPATCH_FLOATING_TYPES(out.scalar_type(), "step_product", [&] {
      (*this)(out.data_ptr<scalar_t>(), rows.data_ptr<scalar_t>(),
              addend.defined() ? addend.data_ptr<scalar_t>() : nullptr, rows.size(0));
    });
  }
};

// inputs: projected (T,B,N) when win is empty, else raw (T,B,F) with win (N,F), bias (N) or empty.
// h0 (B,N), P (N,N) transition (row form), Wt (N,N). Returns states and (when store) tanh(z).
std::vector<Tensor> lipschitz_forward(Tensor inputs, Tensor win, Tensor bias, Tensor h0, Tensor P,
                                      Tensor Wt, double eps, int64_t activation, bool store,
                                      bool /*store_recurrent*/) {
  TORCH_CHECK(activation == TANH, "stablernn engine: the Lipschitz RNN's activation is tanh");
  check_cpu(inputs, "inputs"); check_cpu(h0, "h0"); check_cpu(P, "transition"); check_cpu(Wt, "recurrent");
  const bool fused = win.numel() > 0;
  const int64_t T = inputs.size(0), B = inputs.size(1), N = h0.size(1);
  const int64_t F = fused ? inputs.size(2) : 0;
  auto opts = inputs.options();
  Tensor MW = at::cat({P, Wt}, 1).contiguous();  // h [P | W^T]: one GEMM per step
  const StepProduct step_product(MW);
  Tensor winT = fused ? win.t().contiguous() : at::empty({0}, opts);
  Tensor b = bias.contiguous();
  auto states = pooled_empty({T, B, N}, opts);
  auto drive = store ? pooled_empty({T, B, N}, opts) : at::empty({0}, opts);
  const int64_t blocks = row_blocks(B, N);
  AT_DISPATCH_FLOATING_TYPES(inputs.scalar_type(), "lipschitz_forward", [&] {
    const scalar_t* in = inputs.data_ptr<scalar_t>();
    const scalar_t* wp = ptr_or_null<scalar_t>(winT);
    const scalar_t* bp = ptr_or_null<scalar_t>(b);
    scalar_t* state_rows = states.data_ptr<scalar_t>();
    scalar_t* drive_rows = store ? drive.data_ptr<scalar_t>() : nullptr;
    over_row_blocks(B, blocks, [&](int64_t, int64_t r0, int64_t r1) {
      const int64_t R = r1 - r0;
      Tensor hm = at::empty({R, 2 * N}, opts);
      scalar_t* hp = hm.data_ptr<scalar_t>();
      const scalar_t* h = h0.data_ptr<scalar_t>() + r0 * N;
      const scalar_t* none = nullptr;
      for (int64_t t = 0; t < T; ++t) {
        step_product(hp, h, none, R);
        const scalar_t* up = fused ? nullptr : in + (t * B + r0) * N;
        const scalar_t* xp = fused ? in + (t * B + r0) * F : nullptr;
        scalar_t* op = state_rows + (t * B + r0) * N;
        scalar_t* dp = store ? drive_rows + (t * B + r0) * N : nullptr;
        over_rows<scalar_t>(R, N, [&](int64_t b0, int64_t b1, scalar_t* scratch) {
          lip_fwd_ew(b0, b1, N, hp, up, F, xp, wp, bp, eps, op, dp, scratch);
        });
        h = op;
      }
    });
  });
  return {states, drive};
}

// G: gradients of all states (T,B,N), or empty when only the last state has one (G_last (B,N),
// or empty): a loss on the final state then costs no dense (T,B,N) gradient.
// Returns grads of (inputs, win, bias, h0, P, Wt); empty tensors where not applicable.
// The rows [g_t | dz_t] feed the weight gradients [dP | dW^T] += h_{t-1}^T [g_t | dz_t]. When the
// input-side gradient DZ is not returned (fused input layer, inputs without grad), they live in
// two buffers of CHUNK steps used in turn, and each chunk's weight gradient is one GEMM over its
// CHUNK * B rows, taken while the chunk is still in cache; otherwise in one buffer of all T steps
// (DZ is returned from it) with one GEMM after the loop.
constexpr int64_t CHUNK = 32;

std::vector<Tensor> lipschitz_backward(Tensor G, Tensor G_last, Tensor states, Tensor drive, Tensor inputs,
                                       Tensor win, Tensor bias, Tensor h0, Tensor P, Tensor Wt,
                                       double eps, int64_t /*activation*/, bool need_inputs,
                                       bool /*need_recurrent*/) {
  check_cpu(G, "grad"); check_cpu(G_last, "grad of the last state");
  check_cpu(states, "states"); check_cpu(drive, "drive");
  const bool fused = win.numel() > 0;
  const bool per_step = G.numel() > 0;  // else only the last state has a gradient
  const int64_t T = states.size(0), B = states.size(1), N = states.size(2);
  auto opts = states.options();
  // [P^T ; W] (2N, N): a step's two products are one GEMM on the row [g | dz]
  Tensor MT = at::cat({P.t(), Wt.t()}, 0).contiguous();
  const StepProduct step_product(MT);
  const bool keep_all = !fused || need_inputs;
  const int64_t chunk = keep_all ? T : std::min(T, CHUNK);
  std::vector<Tensor> buffers;
  for (int64_t i = 0; i < (keep_all ? 1 : 2); ++i) buffers.push_back(pooled_empty({chunk, B, 2 * N}, opts));
  auto grad_M = at::zeros({N, 2 * N}, opts);
  // [dP | dW^T] += H_prev^T [G | DZ] over the steps [t0, t1) of one chunk (H_prev: h0, then states)
  auto chunk_weight_grads = [&](int64_t t0, int64_t t1) {
    Tensor rows = buffers[(t0 / chunk) % buffers.size()];
    int64_t first = t0;
    if (t0 == 0) { grad_M.addmm_(h0.t(), rows.select(0, 0)); first = 1; }
    if (t1 > first) {
      grad_M.addmm_(states.narrow(0, first - 1, t1 - first).reshape({(t1 - first) * B, N}).t(),
                    rows.narrow(0, first - t0, t1 - first).reshape({(t1 - first) * B, 2 * N}));
    }
  };
  auto grad_h0 = at::empty({B, N}, opts);
  const int64_t F = fused ? inputs.size(2) : 0;
  const int64_t blocks = row_blocks(B, N);
  std::vector<InputGrads> input_grads;  // one accumulator per row block
  for (int64_t c = 0; c < blocks; ++c) input_grads.emplace_back(fused ? N : 0, F, opts);
  // g_t of every row, contiguous: each step's product writes g_{t-1} here (see step_product),
  // and the next elementwise pass copies it into the rows [g | dz] while computing dz
  Tensor g_next = per_step ? G.select(0, T - 1).clone() : at::zeros({B, N}, opts);
  if (G_last.numel() > 0) g_next.add_(G_last);
  AT_DISPATCH_FLOATING_TYPES(states.scalar_type(), "lipschitz_backward", [&] {
    // the steps [t0, t1) of one chunk (all T steps when keep_all), backwards, rows split in blocks
    for (int64_t t1 = T; t1 > 0;) {
      const int64_t t0 = keep_all ? 0 : ((t1 - 1) / chunk) * chunk;
      over_row_blocks(B, blocks, [&](int64_t c, int64_t r0, int64_t r1) {
        const int64_t R = r1 - r0;
        scalar_t* g = g_next.data_ptr<scalar_t>() + r0 * N;
        const scalar_t* grads_in = per_step ? G.data_ptr<scalar_t>() : nullptr;
        const scalar_t* none = nullptr;
        for (int64_t t = t1 - 1; t >= t0; --t) {
          scalar_t* gp = buffers[(t / chunk) % buffers.size()].data_ptr<scalar_t>()
                         + ((t % chunk) * B + r0) * 2 * N;
          const scalar_t* dp = drive.data_ptr<scalar_t>() + (t * B + r0) * N;
          over_rows<scalar_t>(R, N, [&](int64_t b0, int64_t b1, scalar_t*) {
            lip_bwd_ew(b0, b1, N, g, gp, dp, eps);
          });
          if (fused) input_grads[c].add<scalar_t>(R, gp + N, 2 * N, inputs.data_ptr<scalar_t>() + (t * B + r0) * F);
          if (t > 0) {
            step_product(g, gp, per_step ? grads_in + ((t - 1) * B + r0) * N : none, R);
          } else {
            step_product(grad_h0.data_ptr<scalar_t>() + r0 * N, gp, none, R);
          }
        }
      });
      if (!keep_all) chunk_weight_grads(t0, t1);
      t1 = t0;
    }
  });
  for (int64_t c = 1; c < blocks; ++c) input_grads[0].acc.add_(input_grads[c].acc);
  if (keep_all) chunk_weight_grads(0, T);
  std::vector<Tensor> grads;
  if (fused) {
    Tensor DZ = keep_all ? buffers[0].reshape({T * B, 2 * N}).narrow(1, N, N) : at::empty({0}, opts);
    grads = input_grads[0].finish(DZ, inputs, win, bias, need_inputs);
  } else {  // input-side gradient, row stride 2N
    grads = {buffers[0].reshape({T * B, 2 * N}).narrow(1, N, N).reshape({T, B, N}),
             at::empty({0}, opts), at::empty({0}, opts)};
  }
  grads.push_back(grad_h0);
  grads.push_back(grad_M.narrow(1, 0, N).contiguous());
  grads.push_back(grad_M.narrow(1, N, N).contiguous());
  return grads;
}

// ------------------------------------------------------------------ Lipschitz RNN, RK2
// The explicit midpoint step (paper 002, eq. 10) with f(h) = h L + tanh(h W^T + u), L = alpha A^T:
//   hm1 = h [L | W^T],   d1 = tanh(hm1[:, N:] + u),   mid = h + eps/2 (hm1[:, :N] + d1)
//   hm2 = mid [L | W^T], d2 = tanh(hm2[:, N:] + u),   h' = h + eps (hm2[:, :N] + d2)
// Backward, g the gradient of h': r2 = [eps g | eps (1 - d2^2) g], gmid = r2 [L^T ; W],
//   r1 = [eps/2 gmid | eps/2 (1 - d1^2) gmid], g_prev = G_prev + g + gmid + r1 [L^T ; W];
//   [dL | dW^T] += mid^T r2 + h^T r1, du = the right halves of r1 + r2.

// One stage of a row: out <- h + scale (hm[:, :N] + d) with d = tanh(hm[:, N:] + u), stored in
// dr when given (the branch outside the loops: inside, it keeps GCC from vectorizing them).
template <typename S>
inline __attribute__((always_inline)) void rk2_stage_row(int64_t n, const S* __restrict hr,
    const S* __restrict a, const S* __restrict ur, S scale, S* __restrict o, S* __restrict dr) {
  const S* zr = a + n;
  if (dr != nullptr) {
    for (int64_t i = 0; i < n; ++i) {
      const S d = tanh_of(zr[i] + ur[i]);
      o[i] = hr[i] + scale * (a[i] + d);
      dr[i] = d;
    }
  } else {
    for (int64_t i = 0; i < n; ++i) o[i] = hr[i] + scale * (a[i] + tanh_of(zr[i] + ur[i]));
  }
}

// First half-step, row by row: u from its rows or the fused input layer (then kept in ub for the
// second half); mid <- h + half (hm[:, :N] + d1); d1 stored when given.
template <typename S>
inline __attribute__((always_inline)) void rk2_half_body(int64_t b0, int64_t b1, int64_t n,
    const S* __restrict h, const S* __restrict hm, const S* __restrict u, int64_t F,
    const S* __restrict x, const S* __restrict winT, const S* __restrict bias, S half,
    S* __restrict mid, S* __restrict d1, S* __restrict ub) {
  for (int64_t b = b0; b < b1; ++b) {
    const S* ur;
    if (u != nullptr) ur = u + b * n;
    else { input_row<S>(n, F, x + b * F, winT, bias, ub + b * n); ur = ub + b * n; }
    rk2_stage_row<S>(n, h + b * n, hm + b * 2 * n, ur, half, mid + b * n,
                     d1 != nullptr ? d1 + b * n : nullptr);
  }
}

// Second half-step: out <- h + eps (hm[:, :N] + d2); d2 stored when given.
template <typename S>
inline __attribute__((always_inline)) void rk2_full_body(int64_t b0, int64_t b1, int64_t n,
    const S* __restrict h, const S* __restrict hm, const S* __restrict u, S eps,
    S* __restrict out, S* __restrict d2) {
  for (int64_t b = b0; b < b1; ++b) {
    rk2_stage_row<S>(n, h + b * n, hm + b * 2 * n, u + b * n, eps, out + b * n,
                     d2 != nullptr ? d2 + b * n : nullptr);
  }
}

// r (B, 2N) <- [scale g | scale (1 - d^2) g]; du <- (or +=, when accumulate) the right half.
template <typename S>
inline __attribute__((always_inline)) void rk2_bwd_body(int64_t b0, int64_t b1, int64_t n,
    const S* __restrict g, const S* __restrict d, S scale, S* __restrict r, S* __restrict du,
    bool accumulate) {
  for (int64_t b = b0; b < b1; ++b) {
    const S* gr = g + b * n; const S* dr = d + b * n; S* row = r + b * 2 * n; S* dur = du + b * n;
    for (int64_t i = 0; i < n; ++i) {
      const S a = scale * (S(1) - dr[i] * dr[i]) * gr[i];
      row[i] = scale * gr[i];
      row[n + i] = a;
      dur[i] = accumulate ? dur[i] + a : a;
    }
  }
}

CLONES void rk2_half_f(int64_t b0, int64_t b1, int64_t n, const float* h, const float* hm, const float* u, int64_t F,
                       const float* x, const float* w, const float* bias, float half, float* mid, float* d1, float* ub) {
  rk2_half_body<float>(b0, b1, n, h, hm, u, F, x, w, bias, half, mid, d1, ub); }
void rk2_half_d(int64_t b0, int64_t b1, int64_t n, const double* h, const double* hm, const double* u, int64_t F,
                const double* x, const double* w, const double* bias, double half, double* mid, double* d1, double* ub) {
  rk2_half_body<double>(b0, b1, n, h, hm, u, F, x, w, bias, half, mid, d1, ub); }
CLONES void rk2_full_f(int64_t b0, int64_t b1, int64_t n, const float* h, const float* hm, const float* u, float eps, float* o, float* d2) {
  rk2_full_body<float>(b0, b1, n, h, hm, u, eps, o, d2); }
void rk2_full_d(int64_t b0, int64_t b1, int64_t n, const double* h, const double* hm, const double* u, double eps, double* o, double* d2) {
  rk2_full_body<double>(b0, b1, n, h, hm, u, eps, o, d2); }
CLONES void rk2_bwd_f(int64_t b0, int64_t b1, int64_t n, const float* g, const float* d, float scale, float* r, float* du, bool acc) {
  rk2_bwd_body<float>(b0, b1, n, g, d, scale, r, du, acc); }
void rk2_bwd_d(int64_t b0, int64_t b1, int64_t n, const double* g, const double* d, double scale, double* r, double* du, bool acc) {
  rk2_bwd_body<double>(b0, b1, n, g, d, scale, r, du, acc); }

inline void rk2_half(int64_t b0, int64_t b1, int64_t n, const float* h, const float* hm, const float* u, int64_t F, const float* x,
                     const float* w, const float* bias, double half, float* mid, float* d1, float* ub) {
  rk2_half_f(b0, b1, n, h, hm, u, F, x, w, bias, float(half), mid, d1, ub); }
inline void rk2_half(int64_t b0, int64_t b1, int64_t n, const double* h, const double* hm, const double* u, int64_t F, const double* x,
                     const double* w, const double* bias, double half, double* mid, double* d1, double* ub) {
  rk2_half_d(b0, b1, n, h, hm, u, F, x, w, bias, half, mid, d1, ub); }
inline void rk2_full(int64_t b0, int64_t b1, int64_t n, const float* h, const float* hm, const float* u, double eps, float* o, float* d2) {
  rk2_full_f(b0, b1, n, h, hm, u, float(eps), o, d2); }
inline void rk2_full(int64_t b0, int64_t b1, int64_t n, const double* h, const double* hm, const double* u, double eps, double* o, double* d2) {
  rk2_full_d(b0, b1, n, h, hm, u, eps, o, d2); }
inline void rk2_bwd(int64_t b0, int64_t b1, int64_t n, const float* g, const float* d, double scale, float* r, float* du, bool acc) {
  rk2_bwd_f(b0, b1, n, g, d, float(scale), r, du, acc); }
inline void rk2_bwd(int64_t b0, int64_t b1, int64_t n, const double* g, const double* d, double scale, double* r, double* du, bool acc) {
  rk2_bwd_d(b0, b1, n, g, d, scale, r, du, acc); }

// As lipschitz_forward, with L = alpha A^T in place of the transition. Returns the states and,
// when store, (3, T, B, N): the midpoints, d1 and d2 of every step.
std::vector<Tensor> lipschitz_rk2_forward(Tensor inputs, Tensor win, Tensor bias, Tensor h0, Tensor L,
                                          Tensor Wt, double eps, int64_t activation, bool store,
                                          bool /*store_recurrent*/) {
  TORCH_CHECK(activation == TANH, "stablernn engine: the Lipschitz RNN's activation is tanh");
  check_cpu(inputs, "inputs"); check_cpu(h0, "h0"); check_cpu(L, "linear"); check_cpu(Wt, "recurrent");
  const bool fused = win.numel() > 0;
  const int64_t T = inputs.size(0), B = inputs.size(1), N = h0.size(1);
  const int64_t F = fused ? inputs.size(2) : 0;
  auto opts = inputs.options();
  const StepProduct step_product(at::cat({L, Wt}, 1).contiguous());
  Tensor winT = fused ? win.t().contiguous() : at::empty({0}, opts);
  Tensor b = bias.contiguous();
  auto states = pooled_empty({T, B, N}, opts);
  auto saved = store ? pooled_empty({3, T, B, N}, opts) : at::empty({0}, opts);
  const int64_t blocks = row_blocks(B, N);
  AT_DISPATCH_FLOATING_TYPES(inputs.scalar_type(), "lipschitz_rk2_forward", [&] {
    const scalar_t* in = inputs.data_ptr<scalar_t>();
    const scalar_t* wp = ptr_or_null<scalar_t>(winT);
    const scalar_t* bp = ptr_or_null<scalar_t>(b);
    scalar_t* sp = store ? saved.data_ptr<scalar_t>() : nullptr;
    over_row_blocks(B, blocks, [&](int64_t, int64_t r0, int64_t r1) {
      const int64_t R = r1 - r0;
      Tensor hm = at::empty({R, 2 * N}, opts);
      Tensor mid_rows = at::empty({R, N}, opts);  // the midpoints when they are not stored
      Tensor ub = at::empty({fused ? R : 0, N}, opts);  // u of the fused input layer
      scalar_t* hmp = hm.data_ptr<scalar_t>();
      scalar_t* ubp = fused ? ub.data_ptr<scalar_t>() : nullptr;
      const scalar_t* h = h0.data_ptr<scalar_t>() + r0 * N;
      const scalar_t* none = nullptr;
      for (int64_t t = 0; t < T; ++t) {
        const int64_t row = (t * B + r0) * N;
        scalar_t* st = states.data_ptr<scalar_t>() + row;
        scalar_t* mid = store ? sp + row : mid_rows.data_ptr<scalar_t>();
        const scalar_t* up = fused ? ubp : in + row;
        step_product(hmp, h, none, R);
        over_rows<scalar_t>(R, N, [&](int64_t b0, int64_t b1, scalar_t*) {
          rk2_half(b0, b1, N, h, hmp, fused ? nullptr : up, F,
                   fused ? in + (t * B + r0) * F : nullptr, wp, bp, 0.5 * eps, mid,
                   store ? sp + T * B * N + row : nullptr, ubp);
        });
        step_product(hmp, mid, none, R);
        over_rows<scalar_t>(R, N, [&](int64_t b0, int64_t b1, scalar_t*) {
          rk2_full(b0, b1, N, h, hmp, up, eps, st, store ? sp + 2 * T * B * N + row : nullptr);
        });
        h = st;
      }
    });
  });
  return {states, saved};
}

// As lipschitz_backward (G, G_last, inputs, win, bias), with saved from lipschitz_rk2_forward.
// Returns grads of (inputs, win, bias, h0, L, Wt). The rows r2, r1 of a chunk of CHUNK steps feed
// that chunk's weight gradient, one GEMM each over its CHUNK * B rows.
std::vector<Tensor> lipschitz_rk2_backward(Tensor G, Tensor G_last, Tensor states, Tensor saved,
                                           Tensor inputs, Tensor win, Tensor bias, Tensor h0,
                                           Tensor L, Tensor Wt, double eps, int64_t /*activation*/,
                                           bool need_inputs, bool /*need_recurrent*/) {
  check_cpu(G, "grad"); check_cpu(G_last, "grad of the last state");
  check_cpu(states, "states"); check_cpu(saved, "saved");
  const bool fused = win.numel() > 0;
  const bool per_step = G.numel() > 0;
  const int64_t T = states.size(0), B = states.size(1), N = states.size(2);
  auto opts = states.options();
  const StepProduct step_product(at::cat({L.t(), Wt.t()}, 0).contiguous());
  const int64_t chunk = std::min(T, CHUNK);
  Tensor second = pooled_empty({chunk, B, 2 * N}, opts), first = pooled_empty({chunk, B, 2 * N}, opts);
  const bool keep_du = !fused || need_inputs;  // du returned (or needed for the input's grad)
  Tensor du = keep_du ? pooled_empty({T, B, N}, opts) : at::empty({0}, opts);
  Tensor midpoints = saved.select(0, 0);
  auto grad_M = at::zeros({N, 2 * N}, opts);
  auto chunk_weight_grads = [&](int64_t t0, int64_t t1) {  // steps [t0, t1), rows at slot t - t0
    const int64_t steps = t1 - t0;
    grad_M.addmm_(midpoints.narrow(0, t0, steps).reshape({steps * B, N}).t(),
                  second.narrow(0, 0, steps).reshape({steps * B, 2 * N}));
    int64_t from = t0;
    if (t0 == 0) { grad_M.addmm_(h0.t(), first.select(0, 0)); from = 1; }
    if (t1 > from) {
      grad_M.addmm_(states.narrow(0, from - 1, t1 - from).reshape({(t1 - from) * B, N}).t(),
                    first.narrow(0, from - t0, t1 - from).reshape({(t1 - from) * B, 2 * N}));
    }
  };
  auto grad_h0 = at::empty({B, N}, opts);
  const int64_t F = fused ? inputs.size(2) : 0;
  const int64_t blocks = row_blocks(B, N);
  std::vector<InputGrads> input_grads;
  for (int64_t c = 0; c < blocks; ++c) input_grads.emplace_back(fused ? N : 0, F, opts);
  Tensor g_next = per_step ? G.select(0, T - 1).clone() : at::zeros({B, N}, opts);
  if (G_last.numel() > 0) g_next.add_(G_last);
  AT_DISPATCH_FLOATING_TYPES(states.scalar_type(), "lipschitz_rk2_backward", [&] {
    const scalar_t* d1 = saved.select(0, 1).data_ptr<scalar_t>();
    const scalar_t* d2 = saved.select(0, 2).data_ptr<scalar_t>();
    for (int64_t t1 = T; t1 > 0;) {
      const int64_t t0 = ((t1 - 1) / chunk) * chunk;
      over_row_blocks(B, blocks, [&](int64_t c, int64_t r0, int64_t r1) {
        const int64_t R = r1 - r0;
        scalar_t* g = g_next.data_ptr<scalar_t>() + r0 * N;
        Tensor gmid_rows = at::empty({R, N}, opts), addend_rows = at::empty({R, N}, opts);
        Tensor du_rows = at::empty({keep_du ? 0 : R, N}, opts);  // du of one step when not kept
        scalar_t* gmid = gmid_rows.data_ptr<scalar_t>();
        scalar_t* addend = addend_rows.data_ptr<scalar_t>();
        const scalar_t* none = nullptr;
        for (int64_t t = t1 - 1; t >= t0; --t) {
          const int64_t row = (t * B + r0) * N;
          scalar_t* r2 = second.data_ptr<scalar_t>() + ((t - t0) * B + r0) * 2 * N;
          scalar_t* r1rows = first.data_ptr<scalar_t>() + ((t - t0) * B + r0) * 2 * N;
          scalar_t* dup = keep_du ? du.data_ptr<scalar_t>() + row : du_rows.data_ptr<scalar_t>();
          over_rows<scalar_t>(R, N, [&](int64_t b0, int64_t b1, scalar_t*) {
            rk2_bwd(b0, b1, N, g, d2 + row, eps, r2, dup, false);
          });
          step_product(gmid, r2, none, R);
          over_rows<scalar_t>(R, N, [&](int64_t b0, int64_t b1, scalar_t*) {
            rk2_bwd(b0, b1, N, gmid, d1 + row, 0.5 * eps, r1rows, dup, true);
          });
          if (fused) input_grads[c].add<scalar_t>(R, dup, N, inputs.data_ptr<scalar_t>() + (t * B + r0) * F);
          // addend = g + gmid [+ G_{t-1}], in that order
          const scalar_t* grad_in = t > 0 && per_step ? G.data_ptr<scalar_t>() + row - B * N : none;
          for (int64_t i = 0; i < R * N; ++i) addend[i] = g[i] + gmid[i];
          if (grad_in != nullptr) for (int64_t i = 0; i < R * N; ++i) addend[i] += grad_in[i];
          step_product(t > 0 ? g : grad_h0.data_ptr<scalar_t>() + r0 * N, r1rows, addend, R);
        }
      });
      chunk_weight_grads(t0, t1);
      t1 = t0;
    }
  });
  for (int64_t c = 1; c < blocks; ++c) input_grads[0].acc.add_(input_grads[c].acc);
  std::vector<Tensor> grads;
  if (fused) grads = input_grads[0].finish(du.reshape({-1, N}), inputs, win, bias, need_inputs);
  else grads = {du, at::empty({0}, opts), at::empty({0}, opts)};
  grads.push_back(grad_h0);
  grads.push_back(grad_M.narrow(1, 0, N).contiguous());
  grads.push_back(grad_M.narrow(1, N, N).contiguous());
  return grads;
}

// ------------------------------------------------------------------ rate blocks elementwise
// s (B, K*n) holds x P on entry; y (K, B, n) the block products; u rows (B, K*n) or the fused
// input layer. s <- s + dt (y + u); phik (K, B, n) <- phi(s); ph (B, K*n) <- phi(s) when given.
template <typename S, int64_t A>
inline __attribute__((always_inline)) void net_fwd_body(int64_t B, int64_t b0, int64_t b1, int64_t K, int64_t n,
    S* __restrict s, const S* __restrict y, const S* __restrict u, int64_t F,
    const S* __restrict x, const S* __restrict winT, const S* __restrict bias, S dt,
    S* __restrict phik, S* __restrict ph, S* __restrict acc) {
  const int64_t N = K * n;
  for (int64_t b = b0; b < b1; ++b) {
    const S* urow;
    if (u != nullptr) urow = u + b * N;
    else { input_row<S>(N, F, x + b * F, winT, bias, acc); urow = acc; }
    for (int64_t k = 0; k < K; ++k) {
      S* sr = s + b * N + k * n; const S* ur = urow + k * n;
      const S* yr = y + (k * B + b) * n; S* pr = phik + (k * B + b) * n;
      for (int64_t i = 0; i < n; ++i) {
        const S v = sr[i] + dt * (yr[i] + ur[i]);
        sr[i] = v;
        pr[i] = act<S, A>(v);
      }
      if (ph != nullptr) {
        S* hr = ph + b * N + k * n;
        for (int64_t i = 0; i < n; ++i) hr[i] = pr[i];
      }
    }
  }
}

// phik <- phi(x) in block layout, ph <- phi(x) (optional)
template <typename S, int64_t A>
inline __attribute__((always_inline)) void net_phi_body(int64_t B, int64_t b0, int64_t b1, int64_t K, int64_t n,
    const S* __restrict x, S* __restrict phik, S* __restrict ph) {
  const int64_t N = K * n;
  for (int64_t b = b0; b < b1; ++b)
    for (int64_t k = 0; k < K; ++k) {
      const S* xr = x + b * N + k * n; S* pr = phik + (k * B + b) * n;
      for (int64_t i = 0; i < n; ++i) pr[i] = act<S, A>(xr[i]);
      if (ph != nullptr) {
        S* hr = ph + b * N + k * n;
        for (int64_t i = 0; i < n; ++i) hr[i] = pr[i];
      }
    }
}

// g (B, N) holds g_next P^T on entry. g <- g + G + phi'(x) * q (q in block layout);
// then gk (K,B,n) <- dt g, gu (B,N) <- dt g when those are given.
template <typename S, int64_t A>
inline __attribute__((always_inline)) void net_bwd_body(int64_t B, int64_t b0, int64_t b1, int64_t K, int64_t n,
    S* __restrict g, const S* __restrict G, const S* __restrict q, const S* __restrict x, S dt,
    S* __restrict gk, S* __restrict gu) {
  const int64_t N = K * n;
  for (int64_t b = b0; b < b1; ++b) {
    for (int64_t k = 0; k < K; ++k) {
      const int64_t o = b * N + k * n;
      S* gr = g + o; const S* xr = x + o; const S* qr = q + (k * B + b) * n;
      if (G != nullptr) {
        const S* Gr = G + o;
        for (int64_t i = 0; i < n; ++i) gr[i] = gr[i] + Gr[i] + qr[i] * dact<S, A>(xr[i]);
      } else {
        for (int64_t i = 0; i < n; ++i) gr[i] = gr[i] + qr[i] * dact<S, A>(xr[i]);
      }
      if (gk != nullptr) {
        S* kr = gk + (k * B + b) * n; S* ur = gu + o;
        for (int64_t i = 0; i < n; ++i) { const S v = dt * gr[i]; kr[i] = v; ur[i] = v; }
      }
    }
  }
}

// gk (K,B,n) <- dt g, gu (B,N) <- dt g
template <typename S>
inline __attribute__((always_inline)) void net_scale_body(int64_t B, int64_t b0, int64_t b1, int64_t K, int64_t n,
    const S* __restrict g, S dt, S* __restrict gk, S* __restrict gu) {
  const int64_t N = K * n;
  for (int64_t b = b0; b < b1; ++b)
    for (int64_t k = 0; k < K; ++k)
      for (int64_t i = 0; i < n; ++i) {
        const S v = dt * g[b * N + k * n + i];
        gk[(k * B + b) * n + i] = v;
        gu[b * N + k * n + i] = v;
      }
}

#define NET_KERNELS(A)                                                                             \
  CLONES void net_fwd_f##A(int64_t B, int64_t b0, int64_t b1, int64_t K, int64_t n, float* s,   \
      const float* y, const float* u, int64_t F, const float* x, const float* w,                  \
      const float* bias, float dt, float* pk, float* ph, float* acc) {                            \
    net_fwd_body<float, A>(B, b0, b1, K, n, s, y, u, F, x, w, bias, dt, pk, ph, acc); }          \
  void net_fwd_d##A(int64_t B, int64_t b0, int64_t b1, int64_t K, int64_t n, double* s,         \
      const double* y, const double* u, int64_t F, const double* x, const double* w,              \
      const double* bias, double dt, double* pk, double* ph, double* acc) {                       \
    net_fwd_body<double, A>(B, b0, b1, K, n, s, y, u, F, x, w, bias, dt, pk, ph, acc); }         \
  CLONES void net_phi_f##A(int64_t B, int64_t b0, int64_t b1, int64_t K, int64_t n,             \
      const float* x, float* pk, float* ph) {                                                     \
    net_phi_body<float, A>(B, b0, b1, K, n, x, pk, ph); }                                        \
  void net_phi_d##A(int64_t B, int64_t b0, int64_t b1, int64_t K, int64_t n, const double* x,   \
      double* pk, double* ph) {                                                                   \
    net_phi_body<double, A>(B, b0, b1, K, n, x, pk, ph); }                                       \
  CLONES void net_bwd_f##A(int64_t B, int64_t b0, int64_t b1, int64_t K, int64_t n, float* g,   \
      const float* G, const float* q, const float* x, float dt, float* gk, float* gu) {           \
    net_bwd_body<float, A>(B, b0, b1, K, n, g, G, q, x, dt, gk, gu); }                           \
  void net_bwd_d##A(int64_t B, int64_t b0, int64_t b1, int64_t K, int64_t n, double* g,         \
      const double* G, const double* q, const double* x, double dt, double* gk, double* gu) {     \
    net_bwd_body<double, A>(B, b0, b1, K, n, g, G, q, x, dt, gk, gu); }

NET_KERNELS(0)
NET_KERNELS(1)
NET_KERNELS(2)
NET_KERNELS(3)

CLONES void net_scale_f(int64_t B, int64_t b0, int64_t b1, int64_t K, int64_t n, const float* g, float dt, float* gk, float* gu) { net_scale_body<float>(B, b0, b1, K, n, g, dt, gk, gu); }
void net_scale_d(int64_t B, int64_t b0, int64_t b1, int64_t K, int64_t n, const double* g, double dt, double* gk, double* gu) { net_scale_body<double>(B, b0, b1, K, n, g, dt, gk, gu); }

#define SWITCH_ACT(act, F, ...)                                     \
  switch (act) {                                                    \
    case 0: F##0(__VA_ARGS__); break;                               \
    case 1: F##1(__VA_ARGS__); break;                               \
    case 2: F##2(__VA_ARGS__); break;                               \
    case 3: F##3(__VA_ARGS__); break;                               \
    default: TORCH_CHECK(false, "stablernn engine: unknown activation code ", act); }

// the network's elementwise passes over all batch rows, split across threads
void net_fwd(int64_t a, int64_t B, int64_t K, int64_t n, float* s, const float* y, const float* u, int64_t F, const float* x, const float* w, const float* bias, double dt, float* pk, float* ph) {
  over_rows<float>(B, K * n, [&](int64_t b0, int64_t b1, float* acc) { SWITCH_ACT(a, net_fwd_f, B, b0, b1, K, n, s, y, u, F, x, w, bias, float(dt), pk, ph, acc) }); }
void net_fwd(int64_t a, int64_t B, int64_t K, int64_t n, double* s, const double* y, const double* u, int64_t F, const double* x, const double* w, const double* bias, double dt, double* pk, double* ph) {
  over_rows<double>(B, K * n, [&](int64_t b0, int64_t b1, double* acc) { SWITCH_ACT(a, net_fwd_d, B, b0, b1, K, n, s, y, u, F, x, w, bias, dt, pk, ph, acc) }); }
void net_phi(int64_t a, int64_t B, int64_t K, int64_t n, const float* x, float* pk, float* ph) {
  over_rows<float>(B, K * n, [&](int64_t b0, int64_t b1, float*) { SWITCH_ACT(a, net_phi_f, B, b0, b1, K, n, x, pk, ph) }); }
void net_phi(int64_t a, int64_t B, int64_t K, int64_t n, const double* x, double* pk, double* ph) {
  over_rows<double>(B, K * n, [&](int64_t b0, int64_t b1, double*) { SWITCH_ACT(a, net_phi_d, B, b0, b1, K, n, x, pk, ph) }); }
void net_bwd(int64_t a, int64_t B, int64_t K, int64_t n, float* g, const float* G, const float* q, const float* x, double dt, float* gk, float* gu) {
  over_rows<float>(B, K * n, [&](int64_t b0, int64_t b1, float*) { SWITCH_ACT(a, net_bwd_f, B, b0, b1, K, n, g, G, q, x, float(dt), gk, gu) }); }
void net_bwd(int64_t a, int64_t B, int64_t K, int64_t n, double* g, const double* G, const double* q, const double* x, double dt, double* gk, double* gu) {
  over_rows<double>(B, K * n, [&](int64_t b0, int64_t b1, double*) { SWITCH_ACT(a, net_bwd_d, B, b0, b1, K, n, g, G, q, x, dt, gk, gu) }); }
void net_scale(int64_t B, int64_t K, int64_t n, const float* g, double dt, float* gk, float* gu) {
  over_rows<float>(B, K * n, [&](int64_t b0, int64_t b1, float*) { net_scale_f(B, b0, b1, K, n, g, float(dt), gk, gu); }); }
void net_scale(int64_t B, int64_t K, int64_t n, const double* g, double dt, double* gk, double* gu) {
  over_rows<double>(B, K * n, [&](int64_t b0, int64_t b1, double*) { net_scale_d(B, b0, b1, K, n, g, dt, gk, gu); }); }

// What the networks' backward passes share: sizes, one input-layer accumulator per row block,
// the start of each block's gradient, the block weights' gradient and the returned list.
struct NetworkBackward {
  bool fused, per_step;  // per_step: every state has a gradient (else the last one only)
  int64_t T, B, N, K, n, F, blocks;
  at::TensorOptions opts;
  std::vector<InputGrads> input_grads;
  Tensor grad_x0;
  Tensor blocks_t;  // the W_k themselves (Wk holds their transposes)

  NetworkBackward(const Tensor& G, const Tensor& G_last, const Tensor& states, const Tensor& inputs,
                  const Tensor& win, const Tensor& Wk)
      : fused(win.numel() > 0), per_step(G.numel() > 0), T(states.size(0)), B(states.size(1)),
        N(states.size(2)), K(Wk.size(0)), n(Wk.size(1)), F(win.numel() > 0 ? inputs.size(2) : 0),
        blocks(row_blocks(states.size(1), states.size(2))), opts(states.options()) {
    check_cpu(G, "grad"); check_cpu(G_last, "grad of the last state"); check_cpu(states, "states");
    for (int64_t c = 0; c < blocks; ++c) input_grads.emplace_back(fused ? N : 0, F, opts);
    grad_x0 = at::empty({B, N}, opts);
    blocks_t = Wk.transpose(1, 2).contiguous();
  }

  // the input layer's gradient of step t, rows [r0, r0 + R) of thread block c, from du there
  template <typename S>
  void add_input_rows(int64_t c, int64_t R, const S* du, const Tensor& inputs, int64_t t,
                      int64_t r0) {
    if (fused) input_grads[c].add<S>(R, du, N, inputs.data_ptr<S>() + (t * B + r0) * F);
  }

  // the whole gradient of the last state, rows [r0, r0 + R)
  Tensor last_gradient(const Tensor& G, const Tensor& G_last, int64_t r0, int64_t R) const {
    Tensor g = per_step ? G.select(0, T - 1).narrow(0, r0, R).clone() : at::zeros({R, N}, opts);
    if (G_last.numel() > 0) g.add_(G_last.narrow(0, r0, R));
    return g;
  }

  // out (K, n, n) [+]= phi_k^T rows_k over all T B rows (phi, rows: (T, B, N)), strided views
  void block_gradient(Tensor& out, const Tensor& phi, const Tensor& rows, bool accumulate) const {
    Tensor phv = phi.reshape({T * B, N}), rv = rows.reshape({T * B, N});
    for (int64_t k = 0; k < K; ++k) {
      Tensor block = out.select(0, k);
      if (accumulate) block.addmm_(phv.narrow(1, k * n, n).t(), rv.narrow(1, k * n, n));
      else at::mm_out(block, phv.narrow(1, k * n, n).t(), rv.narrow(1, k * n, n));
    }
  }

  // grads of (inputs, win, bias, x0, coupling, blocks) from GU = du (T, B, N)
  std::vector<Tensor> finish(const Tensor& GU, const Tensor& inputs, const Tensor& win,
                             const Tensor& bias, bool need_inputs, const Tensor& grad_coupling,
                             const Tensor& grad_blocks) {
    for (int64_t c = 1; c < blocks; ++c) input_grads[0].acc.add_(input_grads[c].acc);
    std::vector<Tensor> grads;
    if (fused) grads = input_grads[0].finish(GU.reshape({T * B, N}), inputs, win, bias, need_inputs);
    else grads = {GU, at::empty({0}, opts), at::empty({0}, opts)};
    grads.push_back(grad_x0);
    grads.push_back(grad_coupling);
    grads.push_back(grad_blocks);
    return grads;
  }
};

// What the three network forward passes share: the checks, the sizes, the input layer
// (projected inputs u (T, B, N), or raw inputs (T, B, F) with win (N, F) fused into the step)
// and the states tensor.
struct NetworkForward {
  bool fused;
  int64_t T, B, N, K, n, F, blocks;
  at::TensorOptions opts;
  Tensor winT, bias, states;

  NetworkForward(const Tensor& inputs, const Tensor& win, const Tensor& bias_, const Tensor& x0,
                 const Tensor& coupling, const char* coupling_name, const Tensor& Wk)
      : fused(win.numel() > 0), T(inputs.size(0)), B(inputs.size(1)), N(x0.size(1)),
        K(Wk.size(0)), n(Wk.size(1)), F(win.numel() > 0 ? inputs.size(2) : 0),
        blocks(row_blocks(inputs.size(1), x0.size(1))), opts(inputs.options()) {
    check_cpu(inputs, "inputs"); check_cpu(x0, "x0"); check_cpu(coupling, coupling_name);
    check_cpu(Wk, "blocks");
    TORCH_CHECK(K * n == N, "stablernn engine: blocks (", K, " x ", n, ") do not cover ", N, " units");
    winT = fused ? win.t().contiguous() : at::empty({0}, opts);
    bias = bias_.contiguous();
    states = pooled_empty({T, B, N}, opts);
  }

  // rows [r0, ...) of step t: the projected input (or nullptr when fused) and the raw input
  // (or nullptr when not)
  template <typename S>
  const S* projected(const Tensor& inputs, int64_t t, int64_t r0) const {
    return fused ? nullptr : inputs.data_ptr<S>() + (t * B + r0) * N; }
  template <typename S>
  const S* raw(const Tensor& inputs, int64_t t, int64_t r0) const {
    return fused ? inputs.data_ptr<S>() + (t * B + r0) * F : nullptr; }
};

// inputs: projected (T,B,N) when win is empty, else raw (T,B,F) with win (N,F), bias (N) or empty.
// x0 (B,N), Lt (N,N) = L^T, Wk (K,n,n) = stacked W_k^T.
// Returns states (T,B,N) and, when store_phi, phi(X_prev) (T,B,N) for the block weight gradient.
std::vector<Tensor> network_forward(Tensor inputs, Tensor win, Tensor bias, Tensor x0, Tensor Lt,
                                    Tensor Wk, double dt, int64_t activation, bool store,
                                    bool store_blocks) {
  const bool store_phi = store && store_blocks;
  NetworkForward nf(inputs, win, bias, x0, Lt, "feedback", Wk);
  const int64_t T = nf.T, B = nf.B, N = nf.N, K = nf.K, n = nf.n, F = nf.F;
  auto opts = nf.opts;
  Tensor P = at::eye(N, opts).mul_(1.0 - dt).add_(Lt, dt);
  Tensor states = nf.states;
  auto ph = store_phi ? pooled_empty({T, B, N}, opts) : at::empty({0}, opts);
  AT_DISPATCH_FLOATING_TYPES(inputs.scalar_type(), "network_forward", [&] {
    const scalar_t* wp = ptr_or_null<scalar_t>(nf.winT);
    const scalar_t* bp = ptr_or_null<scalar_t>(nf.bias);
    over_row_blocks(B, nf.blocks, [&](int64_t, int64_t r0, int64_t r1) {
      const int64_t R = r1 - r0;
      Tensor phik = at::empty({K, R, n}, opts);  // phi(x) of this block's rows, block layout
      Tensor yk = at::empty({K, R, n}, opts);
      Tensor x = x0.narrow(0, r0, R);
      net_phi(activation, R, K, n, x.data_ptr<scalar_t>(), phik.data_ptr<scalar_t>(),
              store_phi ? ph.data_ptr<scalar_t>() + r0 * N : nullptr);
      for (int64_t t = 0; t < T; ++t) {
        Tensor st = states.select(0, t).narrow(0, r0, R);
        at::mm_out(st, x, P);
        at::bmm_out(yk, phik, Wk);
        scalar_t* next_ph = (store_phi && t + 1 < T) ? ph.data_ptr<scalar_t>() + ((t + 1) * B + r0) * N : nullptr;
        net_fwd(activation, R, K, n, st.data_ptr<scalar_t>(), yk.data_ptr<scalar_t>(),
                nf.projected<scalar_t>(inputs, t, r0), F, nf.raw<scalar_t>(inputs, t, r0),
                wp, bp, dt, phik.data_ptr<scalar_t>(), next_ph);
        x = st;
      }
    });
  });
  return {states, ph};
}

// G, G_last: as for lipschitz_backward. Returns grads of (inputs, win, bias, x0, Lt, Wk); empty
// tensors where not applicable.
std::vector<Tensor> network_backward(Tensor G, Tensor G_last, Tensor states, Tensor ph, Tensor inputs,
                                     Tensor win, Tensor bias, Tensor x0, Tensor Lt, Tensor Wk,
                                     double dt, int64_t activation, bool need_inputs,
                                     bool need_blocks) {
  NetworkBackward nb(G, G_last, states, inputs, win, Wk);
  const int64_t T = nb.T, B = nb.B, N = nb.N, K = nb.K, n = nb.n, F = nb.F;
  auto opts = nb.opts;
  Tensor PT = at::eye(N, opts).mul_(1.0 - dt).add_(Lt.t(), dt).contiguous();
  const Tensor& WkT = nb.blocks_t;
  auto GU = pooled_empty({T, B, N}, opts);
  AT_DISPATCH_FLOATING_TYPES(states.scalar_type(), "network_backward", [&] {
    over_row_blocks(B, nb.blocks, [&](int64_t c, int64_t r0, int64_t r1) {
      const int64_t R = r1 - r0;
      Tensor gk = at::empty({K, R, n}, opts);
      Tensor qk = at::empty({K, R, n}, opts);
      Tensor gcur = nb.last_gradient(G, G_last, r0, R);
      Tensor gnext = at::empty({R, N}, opts);
      // GU rows of step t for this block
      auto gu_rows = [&](int64_t t) { return GU.data_ptr<scalar_t>() + (t * B + r0) * N; };
      net_scale(R, K, n, gcur.data_ptr<scalar_t>(), dt, gk.data_ptr<scalar_t>(), gu_rows(T - 1));
      nb.add_input_rows<scalar_t>(c, R, gu_rows(T - 1), inputs, T - 1, r0);
      for (int64_t t = T - 1; t >= 0; --t) {
        at::bmm_out(qk, gk, WkT);
        at::mm_out(gnext, gcur, PT);
        const scalar_t* xprev = (t > 0 ? states.select(0, t - 1) : x0).data_ptr<scalar_t>() + r0 * N;
        if (t > 0) {
          const scalar_t* Gp = nb.per_step ? G.data_ptr<scalar_t>() + ((t - 1) * B + r0) * N : nullptr;
          net_bwd(activation, R, K, n, gnext.data_ptr<scalar_t>(), Gp, qk.data_ptr<scalar_t>(),
                  xprev, dt, gk.data_ptr<scalar_t>(), gu_rows(t - 1));
          nb.add_input_rows<scalar_t>(c, R, gu_rows(t - 1), inputs, t - 1, r0);
        } else {
          net_bwd(activation, R, K, n, gnext.data_ptr<scalar_t>(), (const scalar_t*)nullptr,
                  qk.data_ptr<scalar_t>(), xprev, dt, (scalar_t*)nullptr, (scalar_t*)nullptr);
        }
        std::swap(gcur, gnext);
      }
      nb.grad_x0.narrow(0, r0, R).copy_(gcur);
    });
  });
  Tensor grad_Lt = at::mm(x0.t(), GU.select(0, 0));
  if (T > 1) {
    grad_Lt.addmm_(states.narrow(0, 0, T - 1).reshape({(T - 1) * B, N}).t(),
                   GU.narrow(0, 1, T - 1).reshape({(T - 1) * B, N}));
  }
  Tensor grad_Wk = at::empty({0}, opts);
  if (need_blocks) {  // d(W_k^T) = phi(X_prev)_k^T GU_k
    grad_Wk = at::empty({K, n, n}, opts);
    nb.block_gradient(grad_Wk, ph, GU, false);
  }
  return nb.finish(GU, inputs, win, bias, need_inputs, grad_Lt, grad_Wk);
}

// ------------------------------------------------------------------ networks, splitting step
// m = x Q^T (flow_t = Q^T, the feedback's step), x' = (1 - dt) m + dt (blocks(phi(m)) + u).
// Backward, g the gradient of x': gu = dt g, gy = (1 - dt) g + phi'(m) * blocks^T(gu),
// g_prev = G_prev + gy Q; after the loop dQ^T = X_prev^T GY, d(W_k^T) = phi(M)_k^T GU_k, du = GU.

// out <- (1 - dt) m + dt (y + u), y in block layout, u from rows or the fused input layer
template <typename S>
inline __attribute__((always_inline)) void split_fwd_body(int64_t B, int64_t b0, int64_t b1, int64_t K,
    int64_t n, S* __restrict out, const S* __restrict m, const S* __restrict y,
    const S* __restrict u, int64_t F, const S* __restrict x, const S* __restrict winT,
    const S* __restrict bias, S dt, S* __restrict acc) {
  const int64_t N = K * n;
  const S keep = S(1) - dt;
  for (int64_t b = b0; b < b1; ++b) {
    const S* urow;
    if (u != nullptr) urow = u + b * N;
    else { input_row<S>(N, F, x + b * F, winT, bias, acc); urow = acc; }
    for (int64_t k = 0; k < K; ++k) {
      const int64_t o = b * N + k * n;
      const S* yr = y + (k * B + b) * n;
      for (int64_t i = 0; i < n; ++i) out[o + i] = keep * m[o + i] + dt * (yr[i] + urow[k * n + i]);
    }
  }
}

// gy <- (1 - dt) g + phi'(m) * q, q in block layout
template <typename S, int64_t A>
inline __attribute__((always_inline)) void split_bwd_body(int64_t B, int64_t b0, int64_t b1, int64_t K,
    int64_t n, const S* __restrict g, const S* __restrict q, const S* __restrict m, S dt,
    S* __restrict gy) {
  const int64_t N = K * n;
  const S keep = S(1) - dt;
  for (int64_t b = b0; b < b1; ++b)
    for (int64_t k = 0; k < K; ++k) {
      const int64_t o = b * N + k * n;
      const S* qr = q + (k * B + b) * n;
      for (int64_t i = 0; i < n; ++i) gy[o + i] = keep * g[o + i] + qr[i] * dact<S, A>(m[o + i]);
    }
}

CLONES void split_fwd_f(int64_t B, int64_t b0, int64_t b1, int64_t K, int64_t n, float* o, const float* m,
    const float* y, const float* u, int64_t F, const float* x, const float* w, const float* bias, float dt, float* acc) {
  split_fwd_body<float>(B, b0, b1, K, n, o, m, y, u, F, x, w, bias, dt, acc); }
void split_fwd_d(int64_t B, int64_t b0, int64_t b1, int64_t K, int64_t n, double* o, const double* m,
    const double* y, const double* u, int64_t F, const double* x, const double* w, const double* bias, double dt, double* acc) {
  split_fwd_body<double>(B, b0, b1, K, n, o, m, y, u, F, x, w, bias, dt, acc); }

#define SPLIT_KERNELS(A)                                                                           \
  CLONES void split_bwd_f##A(int64_t B, int64_t b0, int64_t b1, int64_t K, int64_t n,             \
      const float* g, const float* q, const float* m, float dt, float* gy) {                     \
    split_bwd_body<float, A>(B, b0, b1, K, n, g, q, m, dt, gy); }                                 \
  void split_bwd_d##A(int64_t B, int64_t b0, int64_t b1, int64_t K, int64_t n,                    \
      const double* g, const double* q, const double* m, double dt, double* gy) {                \
    split_bwd_body<double, A>(B, b0, b1, K, n, g, q, m, dt, gy); }

SPLIT_KERNELS(0)
SPLIT_KERNELS(1)
SPLIT_KERNELS(2)
SPLIT_KERNELS(3)

void split_fwd(int64_t B, int64_t K, int64_t n, float* o, const float* m, const float* y, const float* u, int64_t F, const float* x, const float* w, const float* bias, double dt) {
  over_rows<float>(B, K * n, [&](int64_t b0, int64_t b1, float* acc) { split_fwd_f(B, b0, b1, K, n, o, m, y, u, F, x, w, bias, float(dt), acc); }); }
void split_fwd(int64_t B, int64_t K, int64_t n, double* o, const double* m, const double* y, const double* u, int64_t F, const double* x, const double* w, const double* bias, double dt) {
  over_rows<double>(B, K * n, [&](int64_t b0, int64_t b1, double* acc) { split_fwd_d(B, b0, b1, K, n, o, m, y, u, F, x, w, bias, dt, acc); }); }
void split_bwd(int64_t a, int64_t B, int64_t K, int64_t n, const float* g, const float* q, const float* m, double dt, float* gy) {
  over_rows<float>(B, K * n, [&](int64_t b0, int64_t b1, float*) { SWITCH_ACT(a, split_bwd_f, B, b0, b1, K, n, g, q, m, float(dt), gy) }); }
void split_bwd(int64_t a, int64_t B, int64_t K, int64_t n, const double* g, const double* q, const double* m, double dt, double* gy) {
  over_rows<double>(B, K * n, [&](int64_t b0, int64_t b1, double*) { SWITCH_ACT(a, split_bwd_d, B, b0, b1, K, n, g, q, m, dt, gy) }); }

// As network_forward with Qt = Q^T in place of L^T. Returns states and, when store, (1 or 2, T,
// B, N): the moved states m of every step, and phi(m) when store_blocks.
std::vector<Tensor> network_splitting_forward(Tensor inputs, Tensor win, Tensor bias, Tensor x0,
                                              Tensor Qt, Tensor Wk, double dt, int64_t activation,
                                              bool store, bool store_blocks) {
  NetworkForward nf(inputs, win, bias, x0, Qt, "flow", Wk);
  const int64_t T = nf.T, B = nf.B, N = nf.N, K = nf.K, n = nf.n, F = nf.F;
  auto opts = nf.opts;
  Tensor states = nf.states;
  auto saved = store ? pooled_empty({store_blocks ? 2 : 1, T, B, N}, opts) : at::empty({0}, opts);
  AT_DISPATCH_FLOATING_TYPES(inputs.scalar_type(), "network_splitting_forward", [&] {
    const scalar_t* wp = ptr_or_null<scalar_t>(nf.winT);
    const scalar_t* bp = ptr_or_null<scalar_t>(nf.bias);
    over_row_blocks(B, nf.blocks, [&](int64_t, int64_t r0, int64_t r1) {
      const int64_t R = r1 - r0;
      Tensor phik = at::empty({K, R, n}, opts), yk = at::empty({K, R, n}, opts);
      Tensor moved_rows = at::empty({store ? 0 : R, N}, opts);
      Tensor x = x0.narrow(0, r0, R);
      for (int64_t t = 0; t < T; ++t) {
        Tensor st = states.select(0, t).narrow(0, r0, R);
        Tensor m = store ? saved.select(0, 0).select(0, t).narrow(0, r0, R) : moved_rows;
        at::mm_out(m, x, Qt);
        scalar_t* ph = (store && store_blocks) ? saved.select(0, 1).data_ptr<scalar_t>() + (t * B + r0) * N : nullptr;
        net_phi(activation, R, K, n, m.data_ptr<scalar_t>(), phik.data_ptr<scalar_t>(), ph);
        at::bmm_out(yk, phik, Wk);
        split_fwd(R, K, n, st.data_ptr<scalar_t>(), m.data_ptr<scalar_t>(), yk.data_ptr<scalar_t>(),
                  nf.projected<scalar_t>(inputs, t, r0), F, nf.raw<scalar_t>(inputs, t, r0),
                  wp, bp, dt);
        x = st;
      }
    });
  });
  return {states, saved};
}

// As network_backward, with saved from network_splitting_forward. Returns grads of (inputs, win,
// bias, x0, Qt, Wk); empty tensors where not applicable.
std::vector<Tensor> network_splitting_backward(Tensor G, Tensor G_last, Tensor states, Tensor saved,
                                               Tensor inputs, Tensor win, Tensor bias, Tensor x0,
                                               Tensor Qt, Tensor Wk, double dt, int64_t activation,
                                               bool need_inputs, bool need_blocks) {
  NetworkBackward nb(G, G_last, states, inputs, win, Wk);
  check_cpu(saved, "saved");
  const int64_t T = nb.T, B = nb.B, N = nb.N, K = nb.K, n = nb.n, F = nb.F;
  auto opts = nb.opts;
  Tensor Q = Qt.t().contiguous();
  const Tensor& WkT = nb.blocks_t;
  Tensor moved = saved.select(0, 0);
  auto GU = pooled_empty({T, B, N}, opts), GY = pooled_empty({T, B, N}, opts);
  AT_DISPATCH_FLOATING_TYPES(states.scalar_type(), "network_splitting_backward", [&] {
    over_row_blocks(B, nb.blocks, [&](int64_t c, int64_t r0, int64_t r1) {
      const int64_t R = r1 - r0;
      Tensor gk = at::empty({K, R, n}, opts), qk = at::empty({K, R, n}, opts);
      Tensor g = nb.last_gradient(G, G_last, r0, R);
      for (int64_t t = T - 1; t >= 0; --t) {
        const int64_t row = (t * B + r0) * N;
        scalar_t* gu = GU.data_ptr<scalar_t>() + row;
        net_scale(R, K, n, g.data_ptr<scalar_t>(), dt, gk.data_ptr<scalar_t>(), gu);
        nb.add_input_rows<scalar_t>(c, R, gu, inputs, t, r0);
        at::bmm_out(qk, gk, WkT);
        Tensor gy = GY.select(0, t).narrow(0, r0, R);
        split_bwd(activation, R, K, n, g.data_ptr<scalar_t>(), qk.data_ptr<scalar_t>(),
                  moved.data_ptr<scalar_t>() + row, dt, gy.data_ptr<scalar_t>());
        Tensor out = t > 0 ? g : nb.grad_x0.narrow(0, r0, R);
        if (t > 0 && nb.per_step) at::addmm_out(out, G.select(0, t - 1).narrow(0, r0, R), gy, Q);
        else at::mm_out(out, gy, Q);
      }
    });
  });
  Tensor grad_Qt = at::mm(x0.t(), GY.select(0, 0));
  if (T > 1) {
    grad_Qt.addmm_(states.narrow(0, 0, T - 1).reshape({(T - 1) * B, N}).t(),
                   GY.narrow(0, 1, T - 1).reshape({(T - 1) * B, N}));
  }
  Tensor grad_Wk = at::empty({0}, opts);
  if (need_blocks) {  // d(W_k^T) = phi(M)_k^T GU_k
    TORCH_CHECK(saved.size(0) == 2, "stablernn engine: phi(m) was not stored for the blocks' gradient");
    grad_Wk = at::empty({K, n, n}, opts);
    nb.block_gradient(grad_Wk, saved.select(0, 1), GU, false);
  }
  return nb.finish(GU, inputs, win, bias, need_inputs, grad_Qt, grad_Wk);
}

// ------------------------------------------------------------------ networks, RK2
// The explicit midpoint step with f(x) = x C + blocks(phi(x)) + u, C = L^T - I, h = dt / 2:
//   mid = x P_h + h (blocks(phi(x)) + u)        (P_h = (1 - h) I + h L^T: an Euler step of h)
//   x'  = x + mid (dt C) + dt (blocks(phi(mid)) + u)
// Backward, g the gradient of x': a = dt g, g_mid = g (dt C)^T + phi'(mid) * blocks^T(a),
//   b = h g_mid, g_prev = G_prev + g + g_mid P_h^T + phi'(x) * blocks^T(b);
//   after the loop dL^T = Mid^T A + X_prev^T B, d(W_k^T) = phi(Mid)_k^T A_k + phi(X_prev)_k^T B_k,
//   du = A + B.

// As network_forward. Returns states and, when store, (1 or 3, T, B, N): the midpoints, and
// phi(X_prev), phi(Mid) when store_blocks.
std::vector<Tensor> network_rk2_forward(Tensor inputs, Tensor win, Tensor bias, Tensor x0, Tensor Lt,
                                        Tensor Wk, double dt, int64_t activation, bool store,
                                        bool store_blocks) {
  NetworkForward nf(inputs, win, bias, x0, Lt, "feedback", Wk);
  const int64_t T = nf.T, B = nf.B, N = nf.N, K = nf.K, n = nf.n, F = nf.F;
  auto opts = nf.opts;
  const double h = 0.5 * dt;
  Tensor P_half = at::eye(N, opts).mul_(1.0 - h).add_(Lt, h);
  Tensor dtC = (Lt - at::eye(N, opts)).mul_(dt).contiguous();
  Tensor states = nf.states;
  const bool keep_phi = store && store_blocks;
  auto saved = store ? pooled_empty({keep_phi ? 3 : 1, T, B, N}, opts) : at::empty({0}, opts);
  AT_DISPATCH_FLOATING_TYPES(inputs.scalar_type(), "network_rk2_forward", [&] {
    const scalar_t* wp = ptr_or_null<scalar_t>(nf.winT);
    const scalar_t* bp = ptr_or_null<scalar_t>(nf.bias);
    auto slot = [&](int64_t which, int64_t t, int64_t r0) {
      return saved.data_ptr<scalar_t>() + ((which * T + t) * B + r0) * N; };
    over_row_blocks(B, nf.blocks, [&](int64_t, int64_t r0, int64_t r1) {
      const int64_t R = r1 - r0;
      Tensor phik = at::empty({K, R, n}, opts), phim = at::empty({K, R, n}, opts);
      Tensor yk = at::empty({K, R, n}, opts);
      Tensor mid_rows = at::empty({store ? 0 : R, N}, opts);
      Tensor x = x0.narrow(0, r0, R);
      net_phi(activation, R, K, n, x.data_ptr<scalar_t>(), phik.data_ptr<scalar_t>(),
              keep_phi ? slot(1, 0, r0) : nullptr);
      for (int64_t t = 0; t < T; ++t) {
        Tensor st = states.select(0, t).narrow(0, r0, R);
        Tensor mid = store ? saved.select(0, 0).select(0, t).narrow(0, r0, R) : mid_rows;
        const scalar_t* up = nf.projected<scalar_t>(inputs, t, r0);
        const scalar_t* xp = nf.raw<scalar_t>(inputs, t, r0);
        at::mm_out(mid, x, P_half);
        at::bmm_out(yk, phik, Wk);
        net_fwd(activation, R, K, n, mid.data_ptr<scalar_t>(), yk.data_ptr<scalar_t>(), up, F, xp,
                wp, bp, h, phim.data_ptr<scalar_t>(), keep_phi ? slot(2, t, r0) : nullptr);
        at::bmm_out(yk, phim, Wk);
        at::addmm_out(st, x, mid, dtC);
        net_fwd(activation, R, K, n, st.data_ptr<scalar_t>(), yk.data_ptr<scalar_t>(), up, F, xp,
                wp, bp, dt, phik.data_ptr<scalar_t>(),
                (keep_phi && t + 1 < T) ? slot(1, t + 1, r0) : nullptr);
        x = st;
      }
    });
  });
  return {states, saved};
}

// As network_backward, with saved from network_rk2_forward.
std::vector<Tensor> network_rk2_backward(Tensor G, Tensor G_last, Tensor states, Tensor saved,
                                         Tensor inputs, Tensor win, Tensor bias, Tensor x0,
                                         Tensor Lt, Tensor Wk, double dt, int64_t activation,
                                         bool need_inputs, bool need_blocks) {
  NetworkBackward nb(G, G_last, states, inputs, win, Wk);
  check_cpu(saved, "saved");
  const int64_t T = nb.T, B = nb.B, N = nb.N, K = nb.K, n = nb.n, F = nb.F;
  auto opts = nb.opts;
  const double h = 0.5 * dt;
  Tensor P_halfT = at::eye(N, opts).mul_(1.0 - h).add_(Lt.t(), h).contiguous();
  Tensor dtCT = (Lt.t() - at::eye(N, opts)).mul_(dt).contiguous();
  const Tensor& WkT = nb.blocks_t;
  Tensor midpoints = saved.select(0, 0);
  auto GA = pooled_empty({T, B, N}, opts), GB = pooled_empty({T, B, N}, opts);
  AT_DISPATCH_FLOATING_TYPES(states.scalar_type(), "network_rk2_backward", [&] {
    over_row_blocks(B, nb.blocks, [&](int64_t c, int64_t r0, int64_t r1) {
      const int64_t R = r1 - r0;
      Tensor gk = at::empty({K, R, n}, opts), qk = at::empty({K, R, n}, opts);
      Tensor gmid = at::empty({R, N}, opts), gnext = at::empty({R, N}, opts);
      Tensor g = nb.last_gradient(G, G_last, r0, R);
      auto rows = [&](Tensor& buffer, int64_t t) { return buffer.data_ptr<scalar_t>() + (t * B + r0) * N; };
      net_scale(R, K, n, g.data_ptr<scalar_t>(), dt, gk.data_ptr<scalar_t>(), rows(GA, T - 1));
      for (int64_t t = T - 1; t >= 0; --t) {
        nb.add_input_rows<scalar_t>(c, R, rows(GA, t), inputs, t, r0);
        at::bmm_out(qk, gk, WkT);
        at::mm_out(gmid, g, dtCT);
        net_bwd(activation, R, K, n, gmid.data_ptr<scalar_t>(), (const scalar_t*)nullptr,
                qk.data_ptr<scalar_t>(), midpoints.data_ptr<scalar_t>() + (t * B + r0) * N, h,
                gk.data_ptr<scalar_t>(), rows(GB, t));
        nb.add_input_rows<scalar_t>(c, R, rows(GB, t), inputs, t, r0);
        at::bmm_out(qk, gk, WkT);
        at::addmm_out(gnext, g, gmid, P_halfT);
        const scalar_t* xprev = (t > 0 ? states.select(0, t - 1) : x0).data_ptr<scalar_t>() + r0 * N;
        if (t > 0) {
          const scalar_t* Gp = nb.per_step ? G.data_ptr<scalar_t>() + ((t - 1) * B + r0) * N : nullptr;
          net_bwd(activation, R, K, n, gnext.data_ptr<scalar_t>(), Gp, qk.data_ptr<scalar_t>(),
                  xprev, dt, gk.data_ptr<scalar_t>(), rows(GA, t - 1));
        } else {
          net_bwd(activation, R, K, n, gnext.data_ptr<scalar_t>(), (const scalar_t*)nullptr,
                  qk.data_ptr<scalar_t>(), xprev, dt, (scalar_t*)nullptr, (scalar_t*)nullptr);
        }
        std::swap(g, gnext);
      }
      nb.grad_x0.narrow(0, r0, R).copy_(g);
    });
  });
  Tensor grad_Lt = at::mm(midpoints.reshape({T * B, N}).t(), GA.reshape({T * B, N}));
  grad_Lt.addmm_(x0.t(), GB.select(0, 0));
  if (T > 1) {
    grad_Lt.addmm_(states.narrow(0, 0, T - 1).reshape({(T - 1) * B, N}).t(),
                   GB.narrow(0, 1, T - 1).reshape({(T - 1) * B, N}));
  }
  Tensor grad_Wk = at::empty({0}, opts);
  if (need_blocks) {  // d(W_k^T) = phi(Mid)_k^T A_k + phi(X_prev)_k^T B_k
    TORCH_CHECK(saved.size(0) == 3, "stablernn engine: phi was not stored for the blocks' gradient");
    grad_Wk = at::empty({K, n, n}, opts);
    nb.block_gradient(grad_Wk, saved.select(0, 2), GA, false);
    nb.block_gradient(grad_Wk, saved.select(0, 1), GB, true);
  }
  return nb.finish(GA.add_(GB), inputs, win, bias, need_inputs, grad_Lt, grad_Wk);  // du = A + B
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("lipschitz_forward", &lipschitz_forward);
  m.def("lipschitz_backward", &lipschitz_backward);
  m.def("lipschitz_rk2_forward", &lipschitz_rk2_forward);
  m.def("lipschitz_rk2_backward", &lipschitz_rk2_backward);
  m.def("network_forward", &network_forward);
  m.def("network_backward", &network_backward);
  m.def("network_splitting_forward", &network_splitting_forward);
  m.def("network_rk2_forward", &network_rk2_forward);
  m.def("network_rk2_backward", &network_rk2_backward);
  m.def("network_splitting_backward", &network_splitting_backward);
  m.def("empty_cache", &empty_cache);
  m.def("set_cache_limit", &set_cache_limit);
  m.def("cache_stats", &cache_stats);
  m.def("set_parallel", &set_parallel);
  m.def("set_direct_gemm", &set_direct_gemm);
  m.def("direct_gemm_available", &direct_gemm_available);
  m.def("tanh_float", [](Tensor x) {
    TORCH_CHECK(x.scalar_type() == at::kFloat && x.is_contiguous() && x.device().is_cpu(),
                "tanh_float: a contiguous float32 CPU tensor");
    Tensor y = at::empty_like(x);
    const float* a = x.data_ptr<float>(); float* b = y.data_ptr<float>();
    for (int64_t i = 0; i < x.numel(); ++i) b[i] = tanh_fast(a[i]);
    return y;
  });
}
