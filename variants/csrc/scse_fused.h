// Host entry points of the fused scSE kernels (scse_fused.cu).
//
// Plain C++ on purpose: no CUDA or torch header is needed to include this, so the torch binding
// (scse_fused.cpp) and the kernels compile separately, and the kernels compile with nvcc alone.
// Pointers are device pointers; `stream` is a cudaStream_t passed as void*. Every function
// returns a cudaError_t as int (0 = success); scse_error_string turns it into text.
#pragma once

#include <cstdint>

namespace scse {

// Element types of x and out. Accumulation is float32 for all of them.
enum DType : int { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2 };

// Fusions, as in the Triton variant: add, max, mul, gate.
enum Fusion : int { kAdd = 0, kMax = 1, kMul = 2, kGate = 3 };

// Pass 1: part[n, split, c] = sum of x[n, c, p] over the pixels of `split`.
// x is addressed as n*sN + c*sC + p*sP (p = h*W + w): NCHW has sP = 1, channels_last sC = 1.
int pool_partials(const void* x, float* part, int dtype, int64_t N, int64_t C, int64_t HW,
                  int64_t sN, int64_t sC, int64_t sP, int splits, void* stream);

// The excitation, one block per sample: cg[n, c] = sigmoid(W2 relu(W1 m + b1) + b2)[c] with
// m = inv_hw * (sum over splits of part[n, split, :]). w1 is (HID, C) and w2 (C, HID), row-major
// float32; b1 (HID) and b2 (C) float32 or nullptr. For Fusion kGate, alpha (C) holds the gate
// logits and gate (C) receives sigmoid(alpha), what apply reads (both nullptr otherwise).
// C + HID floats must fit in kExciteSharedFloats.
int excite(const float* part, const float* w1, const float* b1, const float* w2, const float* b2,
           const float* alpha, float* cg, float* gate, int64_t N, int64_t C, int64_t HID, int splits, float inv_hw,
           void* stream);

// The largest C + HID excite holds in shared memory (48 KiB, the default limit of a block).
constexpr int64_t kExciteSharedFloats = 48 * 1024 / 4;

// Pass 2: out = combine(x*cg[n, c], x*sigmoid(ws . x[n, :, p] + bs)), read once per pixel tile.
// cg is (N, C) float32, ws (C) float32, bs a float32 scalar or nullptr, gate (C) float32 holding
// sigmoid(alpha) for Fusion kGate (nullptr otherwise). out is addressed like x with its own strides.
int apply(const void* x, void* out, const float* cg, const float* ws, const float* bs, const float* gate,
          int fusion, int dtype, int64_t N, int64_t C, int64_t HW, int64_t sN, int64_t sC, int64_t sP,
          int64_t oN, int64_t oC, int64_t oP, void* stream);

const char* error_string(int code);

}  // namespace scse
