// torch binding of the fused scSE kernels (scse_fused.cu). Includes no CUDA header: the caller
// passes the stream as an integer (torch.cuda.current_stream().cuda_stream) and the device is
// set by the caller, so this file compiles against a CPU build of torch too (the CI check).
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

at::Tensor pool_partials(const at::Tensor& x, int64_t splits, int64_t stream) {
  check_x(x);
  TORCH_CHECK(splits >= 1, "splits must be positive");
  const auto s = pixel_strides(x);
  const int64_t n = x.size(0), c = x.size(1), hw = x.size(2) * x.size(3);
  at::Tensor part = at::empty({n, splits, c}, x.options().dtype(at::kFloat));
  check(scse::pool_partials(x.data_ptr(), part.data_ptr<float>(), dtype_code(x), n, c, hw, s[0], s[1], s[2],
                            static_cast<int>(splits), reinterpret_cast<void*>(stream)),
        "pool");
  return part;
}

at::Tensor apply(const at::Tensor& x, const at::Tensor& cg, const at::Tensor& ws, const std::optional<at::Tensor>& bs,
                 const std::optional<at::Tensor>& gate, int64_t fusion, int64_t stream) {
  check_x(x);
  const int64_t n = x.size(0), c = x.size(1), hw = x.size(2) * x.size(3);
  check_f32(cg, n * c, "cg", x);
  check_f32(ws, c, "ws", x);
  if (bs) check_f32(*bs, 1, "bs", x);
  if (gate) check_f32(*gate, c, "gate", x);
  TORCH_CHECK(fusion >= scse::kAdd && fusion <= scse::kGate, "unknown fusion code ", fusion);
  TORCH_CHECK(fusion != scse::kGate || gate, "fusion gate needs sigmoid(alpha)");
  const auto s = pixel_strides(x);
  at::Tensor out = at::empty_like(x);  // keeps x's memory format
  const auto o = pixel_strides(out);
  check(scse::apply(x.data_ptr(), out.data_ptr(), cg.data_ptr<float>(), ws.data_ptr<float>(),
                    bs ? bs->data_ptr<float>() : nullptr, gate ? gate->data_ptr<float>() : nullptr,
                    static_cast<int>(fusion), dtype_code(x), n, c, hw, s[0], s[1], s[2], o[0], o[1], o[2],
                    reinterpret_cast<void*>(stream)),
        "apply");
  return out;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "fused scSE forward: pass 1 pools x, pass 2 computes the spatial logit and combines";
  m.def("pool_partials", &pool_partials, "per-(n, split, c) float32 sums of x", py::arg("x"), py::arg("splits"),
        py::arg("stream"));
  m.def("apply", &apply, "out = combine(x*cg, x*sigmoid(ws.x + bs))", py::arg("x"), py::arg("cg"), py::arg("ws"),
        py::arg("bs"), py::arg("gate"), py::arg("fusion"), py::arg("stream"));
}
