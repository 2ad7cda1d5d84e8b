// torch binding of the fused scSE kernels (scse_fused.cu). Includes no CUDA header: the caller
// passes the stream as an integer (torch.cuda.current_stream().cuda_stream) and the device is set
// through c10's device-agnostic guard, so this file compiles against a CPU build of torch too (the
// CI check).
#include <torch/extension.h>

#include <optional>

#include "scse_fused.h"

namespace {

int dtype_code(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kFloat: return scse::kFloat32;
    case at::kHalf: return scse::kFloat16;
    case at::kBFloat16: return scse::kBFloat16;
    default: TORCH_CHECK(false, "cuda_fused supports float32, float16 and bfloat16, not ", t.scalar_type());
  }
  return -1;
}

// (sN, sC, sP) when (h, w) collapse to one pixel index p = h*W + w with stride sP.
std::array<int64_t, 3> pixel_strides(const at::Tensor& t) {
  const int64_t h = t.size(2), w = t.size(3);
  TORCH_CHECK(h == 1 || w == 1 || t.stride(2) == w * t.stride(3),
              "cuda_fused needs H and W to collapse into one pixel index (NCHW or channels_last)");
  return {t.stride(0), t.stride(1), w > 1 ? t.stride(3) : t.stride(2)};
}

void check_x(const at::Tensor& x) {
  TORCH_CHECK(x.is_cuda(), "cuda_fused needs a CUDA tensor");
  TORCH_CHECK(x.dim() == 4, "cuda_fused needs an NCHW tensor, got ", x.dim(), " dimensions");
}

void check_f32(const at::Tensor& t, int64_t numel, const char* name, const at::Tensor& x) {
  TORCH_CHECK(t.scalar_type() == at::kFloat && t.is_contiguous() && t.numel() == numel && t.device() == x.device(),
              name, " must be a contiguous float32 tensor of ", numel, " values on ", x.device());
}

void check(int code, const char* what) {
  TORCH_CHECK(code == 0, "cuda_fused ", what, " failed: ", scse::error_string(code));
}

const float* f32_or_null(const std::optional<at::Tensor>& t) { return t ? t->data_ptr<float>() : nullptr; }

// The whole forward in one call: pool partials, the excitation, apply; three launches on `stream`,
// on x's device. The weights are float32 and contiguous already (prepared once, when the module is
// built): w1 (HID, C), w2 (C, HID), ws (C), the biases, alpha the gate logits (C, fusion gate only).
at::Tensor forward(const at::Tensor& x, const at::Tensor& w1, const std::optional<at::Tensor>& b1, const at::Tensor& w2,
                   const std::optional<at::Tensor>& b2, const at::Tensor& ws, const std::optional<at::Tensor>& bs,
                   const std::optional<at::Tensor>& alpha, int64_t fusion, int64_t splits, int64_t stream) {
  check_x(x);
  const int64_t n = x.size(0), c = x.size(1), hw = x.size(2) * x.size(3);
  const int64_t hid = c > 0 ? w1.numel() / c : 0;
  TORCH_CHECK(hid >= 1 && c + hid <= scse::kExciteSharedFloats,
              "cuda_fused needs 1 <= hidden and C + hidden <= ", scse::kExciteSharedFloats, ", got C=", c,
              " and w1 of ", w1.numel(), " values");
  check_f32(w1, hid * c, "w1", x);
  check_f32(w2, c * hid, "w2", x);
  check_f32(ws, c, "ws", x);
  if (b1) check_f32(*b1, hid, "b1", x);
  if (b2) check_f32(*b2, c, "b2", x);
  if (bs) check_f32(*bs, 1, "bs", x);
  if (alpha) check_f32(*alpha, c, "alpha", x);
  TORCH_CHECK(fusion >= scse::kAdd && fusion <= scse::kGate, "unknown fusion code ", fusion);
  TORCH_CHECK((fusion == scse::kGate) == alpha.has_value(), "fusion gate needs alpha, and only gate takes it");
  TORCH_CHECK(splits >= 1, "splits must be positive");
  const c10::DeviceGuard guard(x.device());
  const auto s = pixel_strides(x);
  const auto opts = x.options().dtype(at::kFloat);
  at::Tensor part = at::empty({n, splits, c}, opts);
  at::Tensor gates = at::empty({(n + (alpha ? 1 : 0)) * c}, opts);  // cg (N, C), then sigmoid(alpha) (C)
  float* cg = gates.data_ptr<float>();
  float* gate = alpha ? cg + n * c : nullptr;
  at::Tensor out = at::empty_like(x);  // keeps x's memory format
  const auto o = pixel_strides(out);
  void* st = reinterpret_cast<void*>(stream);
  check(scse::pool_partials(x.data_ptr(), part.data_ptr<float>(), dtype_code(x), n, c, hw, s[0], s[1], s[2],
                            static_cast<int>(splits), st),
        "pool");
  check(scse::excite(part.data_ptr<float>(), w1.data_ptr<float>(), f32_or_null(b1), w2.data_ptr<float>(),
                     f32_or_null(b2), f32_or_null(alpha), cg, gate, n, c, hid, static_cast<int>(splits),
                     1.0f / static_cast<float>(hw), st),
        "excite");
  check(scse::apply(x.data_ptr(), out.data_ptr(), cg, ws.data_ptr<float>(), f32_or_null(bs), gate,
                    static_cast<int>(fusion), dtype_code(x), n, c, hw, s[0], s[1], s[2], o[0], o[1], o[2], st),
        "apply");
  return out;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "fused scSE forward: pool x, the excitation MLP, then the spatial logit and the combine";
  m.def("forward", &forward, "out = combine(x*cg, x*sigmoid(ws.x + bs)) in three launches", py::arg("x"),
        py::arg("w1"), py::arg("b1"), py::arg("w2"), py::arg("b2"), py::arg("ws"), py::arg("bs"), py::arg("alpha"),
        py::arg("fusion"), py::arg("splits"), py::arg("stream"));
}
