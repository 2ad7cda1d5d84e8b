// Fused scSE forward in two passes over x: pool, then logit + combine, float32 accumulation; between
// them the excitation MLP on the pooled (N, C) vector, one block per sample. Three launches.
//
// Depends on the CUDA runtime and its fp16/bf16 headers only (no torch), so that CI machines
// without a GPU or a CUDA build of torch can still compile it with `nvcc -c` and catch errors.
// The torch binding is scse_fused.cpp; the entry points are declared in scse_fused.h.
//
// The *_fast kernels are correct for any strides; the layout only picks the thread mapping that keeps
// loads coalesced: lanes along pixels for NCHW (sP == 1), along channels for channels_last (sC == 1).
// NCHW rows that start on 16-byte boundaries and hold whole 16-byte vectors (all the benchmark
// shapes) take the *_vec kernels instead, which load and store 16 bytes a lane.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "scse_fused.h"

namespace scse {
namespace {

constexpr int kWarp = 32;
constexpr int kRows = 8;          // warps per block (blockDim.y)
constexpr int kPixPerLane = 2;    // NCHW apply: pixels per lane, so a block covers 64 pixels
constexpr int kTilePixels = kWarp * kPixPerLane;

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ float from_float<float>(float v) { return v; }
template <>
__device__ __forceinline__ __half from_float<__half>(float v) { return __float2half_rn(v); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int offset = kWarp / 2; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

__device__ __forceinline__ float sigmoid(float s) { return 1.0f / (1.0f + expf(-s)); }

// max that keeps NaN, as torch.maximum and torch.relu do (fmaxf returns the other operand, so a NaN
// pooled from one bad pixel would vanish from every other pixel's output).
__device__ __forceinline__ float max_nan(float a, float b) { return (a != a || b != b) ? a + b : fmaxf(a, b); }

// combine(x*c, x*sig) for the fusion; g = sigmoid(alpha) of the channel, used by gate only.
__device__ __forceinline__ float combine(int fusion, float x, float c, float sig, float g) {
  switch (fusion) {
    case kMax: return max_nan(x * c, x * sig);
    case kMul: return (x * c) * (x * sig);
    case kGate: return x * (g * c + (1.0f - g) * sig);
    default: return x * (c + sig);  // kAdd
  }
}

// 16 bytes of T, loaded and stored as one 128-bit access (as PyTorch's aligned_vector): a warp then
// moves 512 bytes an instruction along an NCHW pixel row, where a scalar float16 load moves 64.
template <typename T>
struct alignas(16) Vec16 {
  static constexpr int kSize = 16 / static_cast<int>(sizeof(T));
  T v[kSize];
};

// ---- pass 1: partial sums per (n, split, c) ------------------------------------------------

// NCHW: one warp per channel, lanes along the split's pixels (contiguous).
template <typename T>
__global__ void pool_pixels_fast(const T* __restrict__ x, float* __restrict__ part, int64_t C, int64_t HW,
                                 int64_t sN, int64_t sC, int64_t sP, int64_t chunk) {
  const int split = blockIdx.x;
  const int64_t c = static_cast<int64_t>(blockIdx.y) * kRows + threadIdx.y;
  const int64_t n = blockIdx.z;
  if (c >= C) return;  // whole warps leave together: c depends on threadIdx.y only
  const int64_t begin = split * chunk;
  const int64_t end = begin + chunk < HW ? begin + chunk : HW;
  const T* base = x + n * sN + c * sC;
  float acc = 0.0f;
  for (int64_t p = begin + threadIdx.x; p < end; p += kWarp) acc += to_float(base[p * sP]);
  acc = warp_sum(acc);
  if (threadIdx.x == 0) part[(n * gridDim.x + split) * C + c] = acc;
}

// NCHW whose pixel rows are 16-byte aligned (see rows_aligned): as pool_pixels_fast, 16 bytes a lane.
// chunk is a multiple of the vector, so a vector never straddles two splits or the row's end.
template <typename T>
__global__ void pool_pixels_vec(const T* __restrict__ x, float* __restrict__ part, int64_t C, int64_t HW,
                                int64_t sN, int64_t sC, int64_t chunk) {
  using V = Vec16<T>;
  constexpr int kV = V::kSize;
  const int split = blockIdx.x;
  const int64_t c = static_cast<int64_t>(blockIdx.y) * kRows + threadIdx.y;
  const int64_t n = blockIdx.z;
  if (c >= C) return;  // whole warps leave together
  const int64_t begin = split * chunk;
  const int64_t end = begin + chunk < HW ? begin + chunk : HW;
  const T* base = x + n * sN + c * sC;
  float acc = 0.0f;
#pragma unroll 4
  for (int64_t p = begin + threadIdx.x * kV; p < end; p += kWarp * kV) {
    const V a = *reinterpret_cast<const V*>(base + p);
#pragma unroll
    for (int j = 0; j < kV; ++j) acc += to_float(a.v[j]);
  }
  acc = warp_sum(acc);
  if (threadIdx.x == 0) part[(n * gridDim.x + split) * C + c] = acc;
}

// channels_last: lanes along channels (contiguous), warps along the split's pixels.
template <typename T>
__global__ void pool_channels_fast(const T* __restrict__ x, float* __restrict__ part, int64_t C, int64_t HW,
                                   int64_t sN, int64_t sC, int64_t sP, int64_t chunk) {
  __shared__ float rows[kRows][kWarp];
  const int split = blockIdx.x;
  const int64_t c = static_cast<int64_t>(blockIdx.y) * kWarp + threadIdx.x;
  const int64_t n = blockIdx.z;
  const int64_t begin = split * chunk;
  const int64_t end = begin + chunk < HW ? begin + chunk : HW;
  float acc = 0.0f;
  if (c < C) {
    const T* base = x + n * sN + c * sC;
    for (int64_t p = begin + threadIdx.y; p < end; p += kRows) acc += to_float(base[p * sP]);
  }
  rows[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && c < C) {
    float total = 0.0f;
#pragma unroll
    for (int r = 0; r < kRows; ++r) total += rows[r][threadIdx.x];
    part[(n * gridDim.x + split) * C + c] = total;
  }
}

// ---- the excitation: pooled (N, C) -> channel gates ------------------------------------------

constexpr int kExciteThreads = 256;

// One block per sample: the mean and the hidden vector live in shared memory; a warp per hidden
// unit reduces fc1's row over C, then a thread per channel does fc2's row over HID. Block 0 also
// writes sigmoid(alpha) when the fusion is gate (alpha != nullptr).
__global__ void excite_kernel(const float* __restrict__ part, const float* __restrict__ w1,
                              const float* __restrict__ b1, const float* __restrict__ w2, const float* __restrict__ b2,
                              const float* __restrict__ alpha, float* __restrict__ cg, float* __restrict__ gate,
                              int64_t C, int64_t HID, int splits, float inv_hw) {
  extern __shared__ float shared[];
  float* mean = shared;         // C values
  float* hidden = shared + C;   // HID values
  const int64_t n = blockIdx.x;
  const float* pn = part + n * splits * C;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
    float total = 0.0f;
    for (int s = 0; s < splits; ++s) total += pn[s * C + c];
    mean[c] = total * inv_hw;
    if (alpha != nullptr && n == 0) gate[c] = sigmoid(alpha[c]);
  }
  __syncthreads();
  const int lane = threadIdx.x % kWarp;
  const int warps = blockDim.x / kWarp;
  for (int64_t h = threadIdx.x / kWarp; h < HID; h += warps) {  // whole warps: h depends on the warp only
    const float* row = w1 + h * C;
    float pre = 0.0f;
    for (int64_t c = lane; c < C; c += kWarp) pre += row[c] * mean[c];
    pre = warp_sum(pre);
    if (lane == 0) hidden[h] = max_nan(pre + (b1 != nullptr ? b1[h] : 0.0f), 0.0f);
  }
  __syncthreads();
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
    const float* row = w2 + c * HID;
    float z = b2 != nullptr ? b2[c] : 0.0f;
    for (int64_t h = 0; h < HID; ++h) z += row[h] * hidden[h];
    cg[n * C + c] = sigmoid(z);
  }
}

// ---- pass 2: spatial logit and combine --------------------------------------------------------

// NCHW: a block owns kTilePixels pixels; lanes along pixels, the kRows warps split the channels.
template <typename T>
__global__ void apply_pixels_fast(const T* __restrict__ x, T* __restrict__ out, const float* __restrict__ cg,
                                  const float* __restrict__ ws, const float* __restrict__ bs,
                                  const float* __restrict__ gate, int fusion, int64_t C, int64_t HW, int64_t sN,
                                  int64_t sC, int64_t sP, int64_t oN, int64_t oC, int64_t oP) {
  __shared__ float partial[kRows][kTilePixels];
  __shared__ float sig[kTilePixels];
  const int64_t n = blockIdx.y;
  const int64_t p0 = static_cast<int64_t>(blockIdx.x) * kTilePixels;
  const T* xb = x + n * sN;
  T* ob = out + n * oN;

  float acc[kPixPerLane];
#pragma unroll
  for (int j = 0; j < kPixPerLane; ++j) acc[j] = 0.0f;
  for (int64_t c = threadIdx.y; c < C; c += kRows) {
    const float w = ws[c];
#pragma unroll
    for (int j = 0; j < kPixPerLane; ++j) {
      const int64_t p = p0 + threadIdx.x + j * kWarp;
      if (p < HW) acc[j] += w * to_float(xb[c * sC + p * sP]);
    }
  }
#pragma unroll
  for (int j = 0; j < kPixPerLane; ++j) partial[threadIdx.y][threadIdx.x + j * kWarp] = acc[j];
  __syncthreads();
  if (threadIdx.y == 0) {
    const float bias = bs != nullptr ? *bs : 0.0f;
#pragma unroll
    for (int j = 0; j < kPixPerLane; ++j) {
      const int i = threadIdx.x + j * kWarp;
      float s = bias;
#pragma unroll
      for (int r = 0; r < kRows; ++r) s += partial[r][i];
      sig[i] = sigmoid(s);
    }
  }
  __syncthreads();

  const float* cgn = cg + n * C;
  for (int64_t c = threadIdx.y; c < C; c += kRows) {
    const float cc = cgn[c];
    const float g = gate != nullptr ? gate[c] : 0.0f;
#pragma unroll
    for (int j = 0; j < kPixPerLane; ++j) {
      const int i = threadIdx.x + j * kWarp;
      const int64_t p = p0 + i;
      if (p < HW) {
        const float xv = to_float(xb[c * sC + p * sP]);  // second read: from L1/L2, not DRAM
        ob[c * oC + p * oP] = from_float<T>(combine(fusion, xv, cc, sig[i], g));
      }
    }
  }
}

// NCHW whose pixel rows are 16-byte aligned in x and out: a block owns 32 vectors of pixels (256 at
// float16, 128 at float32), a lane one vector; the kRows warps split the channels. Every lane adds
// the warps' partial logits itself (no second block sync) and keeps its pixels' sigmoids in registers.
template <typename T>
__global__ void apply_pixels_vec(const T* __restrict__ x, T* __restrict__ out, const float* __restrict__ cg,
                                 const float* __restrict__ ws, const float* __restrict__ bs,
                                 const float* __restrict__ gate, int fusion, int64_t C, int64_t HW, int64_t sN,
                                 int64_t sC, int64_t oN, int64_t oC) {
  using V = Vec16<T>;
  constexpr int kV = V::kSize;
  __shared__ float partial[kRows][kV][kWarp];  // [warp][pixel of the vector][lane]: no bank conflicts
  const int64_t n = blockIdx.y;
  const int64_t p = (static_cast<int64_t>(blockIdx.x) * kWarp + threadIdx.x) * kV;  // this lane's first pixel
  const bool live = p < HW;  // HW is a multiple of kV: a lane's vector is wholly inside the row or past it
  const T* xp = x + n * sN + p;
  T* op = out + n * oN + p;

  float acc[kV];
#pragma unroll
  for (int j = 0; j < kV; ++j) acc[j] = 0.0f;
  if (live) {
#pragma unroll 4
    for (int64_t c = threadIdx.y; c < C; c += kRows) {
      const float w = ws[c];
      const V a = *reinterpret_cast<const V*>(xp + c * sC);
#pragma unroll
      for (int j = 0; j < kV; ++j) acc[j] += w * to_float(a.v[j]);
    }
  }
#pragma unroll
  for (int j = 0; j < kV; ++j) partial[threadIdx.y][j][threadIdx.x] = acc[j];
  __syncthreads();
  if (!live) return;  // no block sync follows

  const float bias = bs != nullptr ? *bs : 0.0f;
  float sig[kV];
#pragma unroll
  for (int j = 0; j < kV; ++j) {
    float s = bias;
#pragma unroll
    for (int r = 0; r < kRows; ++r) s += partial[r][j][threadIdx.x];
    sig[j] = sigmoid(s);
  }
  const float* cgn = cg + n * C;
#pragma unroll 4
  for (int64_t c = threadIdx.y; c < C; c += kRows) {
    const float cc = cgn[c];
    const float g = gate != nullptr ? gate[c] : 0.0f;
    const V a = *reinterpret_cast<const V*>(xp + c * sC);  // second read: from L1/L2, not DRAM
    V o;
#pragma unroll
    for (int j = 0; j < kV; ++j) o.v[j] = from_float<T>(combine(fusion, to_float(a.v[j]), cc, sig[j], g));
    __stwb(reinterpret_cast<uint4*>(op + c * oC), *reinterpret_cast<const uint4*>(&o));  // one 128-bit store
  }
}

// channels_last: one warp per pixel, lanes along the channels; no shared memory or block sync.
template <typename T>
__global__ void apply_channels_fast(const T* __restrict__ x, T* __restrict__ out, const float* __restrict__ cg,
                                    const float* __restrict__ ws, const float* __restrict__ bs,
                                    const float* __restrict__ gate, int fusion, int64_t C, int64_t HW, int64_t sN,
                                    int64_t sC, int64_t sP, int64_t oN, int64_t oC, int64_t oP) {
  const int64_t n = blockIdx.y;
  const int64_t p = static_cast<int64_t>(blockIdx.x) * kRows + threadIdx.y;
  if (p >= HW) return;  // whole warps leave together
  const T* xp = x + n * sN + p * sP;
  T* op = out + n * oN + p * oP;
  float s = 0.0f;
  for (int64_t c = threadIdx.x; c < C; c += kWarp) s += ws[c] * to_float(xp[c * sC]);
  s = warp_sum(s) + (bs != nullptr ? *bs : 0.0f);
  const float sg = sigmoid(s);
  const float* cgn = cg + n * C;
  for (int64_t c = threadIdx.x; c < C; c += kWarp) {
    const float g = gate != nullptr ? gate[c] : 0.0f;
    op[c * oC] = from_float<T>(combine(fusion, to_float(xp[c * sC]), cgn[c], sg, g));
  }
}

bool channels_fast(int64_t C, int64_t sC, int64_t sP) { return C > 1 && sC == 1 && sP != 1; }

// Whether every (n, c) pixel row of a tensor starts on a 16-byte boundary and holds whole vectors,
// so the *_vec kernels may load it 16 bytes at a time. Else the scalar kernels, correct for any strides.
template <typename T>
bool rows_aligned(const void* ptr, int64_t C, int64_t HW, int64_t sN, int64_t sC, int64_t sP) {
  constexpr int64_t kV = Vec16<T>::kSize;
  return sP == 1 && HW % kV == 0 && sN % kV == 0 && (C == 1 || sC % kV == 0) &&
         reinterpret_cast<std::uintptr_t>(ptr) % sizeof(Vec16<T>) == 0;
}

template <typename T>
int launch_pool(const void* x, float* part, int64_t N, int64_t C, int64_t HW, int64_t sN, int64_t sC, int64_t sP,
                int splits, cudaStream_t stream) {
  const int64_t chunk = (HW + splits - 1) / splits;
  const dim3 block(kWarp, kRows);
  const T* xt = static_cast<const T*>(x);
  if (channels_fast(C, sC, sP)) {
    const dim3 grid(splits, static_cast<unsigned>((C + kWarp - 1) / kWarp), static_cast<unsigned>(N));
    pool_channels_fast<T><<<grid, block, 0, stream>>>(xt, part, C, HW, sN, sC, sP, chunk);
  } else if (rows_aligned<T>(x, C, HW, sN, sC, sP)) {
    constexpr int64_t kV = Vec16<T>::kSize;
    const dim3 grid(splits, static_cast<unsigned>((C + kRows - 1) / kRows), static_cast<unsigned>(N));
    pool_pixels_vec<T><<<grid, block, 0, stream>>>(xt, part, C, HW, sN, sC, (chunk + kV - 1) / kV * kV);
  } else {
    const dim3 grid(splits, static_cast<unsigned>((C + kRows - 1) / kRows), static_cast<unsigned>(N));
    pool_pixels_fast<T><<<grid, block, 0, stream>>>(xt, part, C, HW, sN, sC, sP, chunk);
  }
  return static_cast<int>(cudaGetLastError());
}

template <typename T>
int launch_apply(const void* x, void* out, const float* cg, const float* ws, const float* bs, const float* gate,
                 int fusion, int64_t N, int64_t C, int64_t HW, int64_t sN, int64_t sC, int64_t sP, int64_t oN,
                 int64_t oC, int64_t oP, cudaStream_t stream) {
  const dim3 block(kWarp, kRows);
  const T* xt = static_cast<const T*>(x);
  T* ot = static_cast<T*>(out);
  if (channels_fast(C, sC, sP)) {
    const dim3 grid(static_cast<unsigned>((HW + kRows - 1) / kRows), static_cast<unsigned>(N));
    apply_channels_fast<T><<<grid, block, 0, stream>>>(xt, ot, cg, ws, bs, gate, fusion, C, HW, sN, sC, sP, oN, oC,
                                                        oP);
  } else if (rows_aligned<T>(x, C, HW, sN, sC, sP) && rows_aligned<T>(out, C, HW, oN, oC, oP)) {
    constexpr int64_t kTile = kWarp * Vec16<T>::kSize;
    const dim3 grid(static_cast<unsigned>((HW + kTile - 1) / kTile), static_cast<unsigned>(N));
    apply_pixels_vec<T><<<grid, block, 0, stream>>>(xt, ot, cg, ws, bs, gate, fusion, C, HW, sN, sC, oN, oC);
  } else {
    const dim3 grid(static_cast<unsigned>((HW + kTilePixels - 1) / kTilePixels), static_cast<unsigned>(N));
    apply_pixels_fast<T><<<grid, block, 0, stream>>>(xt, ot, cg, ws, bs, gate, fusion, C, HW, sN, sC, sP, oN, oC,
                                                      oP);
  }
  return static_cast<int>(cudaGetLastError());
}

}  // namespace

int pool_partials(const void* x, float* part, int dtype, int64_t N, int64_t C, int64_t HW, int64_t sN, int64_t sC,
                  int64_t sP, int splits, void* stream) {
  if (N <= 0 || C <= 0 || HW <= 0 || splits <= 0 || N > 65535) return static_cast<int>(cudaErrorInvalidValue);
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  switch (dtype) {
    case kFloat32: return launch_pool<float>(x, part, N, C, HW, sN, sC, sP, splits, s);
    case kFloat16: return launch_pool<__half>(x, part, N, C, HW, sN, sC, sP, splits, s);
    case kBFloat16: return launch_pool<__nv_bfloat16>(x, part, N, C, HW, sN, sC, sP, splits, s);
    default: return static_cast<int>(cudaErrorInvalidValue);
  }
}

int apply(const void* x, void* out, const float* cg, const float* ws, const float* bs, const float* gate, int fusion,
          int dtype, int64_t N, int64_t C, int64_t HW, int64_t sN, int64_t sC, int64_t sP, int64_t oN, int64_t oC,
          int64_t oP, void* stream) {
  if (N <= 0 || C <= 0 || HW <= 0 || N > 65535) return static_cast<int>(cudaErrorInvalidValue);
  if (fusion < kAdd || fusion > kGate || (fusion == kGate && gate == nullptr)) {
    return static_cast<int>(cudaErrorInvalidValue);
  }
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  switch (dtype) {
    case kFloat32: return launch_apply<float>(x, out, cg, ws, bs, gate, fusion, N, C, HW, sN, sC, sP, oN, oC, oP, s);
    case kFloat16: return launch_apply<__half>(x, out, cg, ws, bs, gate, fusion, N, C, HW, sN, sC, sP, oN, oC, oP, s);
    case kBFloat16:
      return launch_apply<__nv_bfloat16>(x, out, cg, ws, bs, gate, fusion, N, C, HW, sN, sC, sP, oN, oC, oP, s);
    default: return static_cast<int>(cudaErrorInvalidValue);
  }
}

int excite(const float* part, const float* w1, const float* b1, const float* w2, const float* b2,
           const float* alpha, float* cg, float* gate, int64_t N, int64_t C, int64_t HID, int splits, float inv_hw,
           void* stream) {
  if (N <= 0 || C <= 0 || HID <= 0 || splits <= 0 || N > INT32_MAX || C + HID > kExciteSharedFloats) {
    return static_cast<int>(cudaErrorInvalidValue);
  }
  if (alpha != nullptr && gate == nullptr) return static_cast<int>(cudaErrorInvalidValue);
  const size_t shared = static_cast<size_t>(C + HID) * sizeof(float);
  excite_kernel<<<static_cast<unsigned>(N), kExciteThreads, shared, static_cast<cudaStream_t>(stream)>>>(
      part, w1, b1, w2, b2, alpha, cg, gate, C, HID, splits, inv_hw);
  return static_cast<int>(cudaGetLastError());
}

const char* error_string(int code) { return cudaGetErrorString(static_cast<cudaError_t>(code)); }

}  // namespace scse
