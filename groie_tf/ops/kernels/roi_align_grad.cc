// RoIAlign's feature gradient on the CPU, exact and race-free.
//
// TensorFlow's CPU gradient of CropAndResize splits the boxes over threads
// that add into the same pixels without synchronisation, and loses
// additions. This kernel splits the *output* instead: one work unit is one
// image and one block of channels, and it alone writes those elements. (The
// blocks depend on the thread count; an element's sum does not.) It
// reads every box of its image in order, so each element is summed in the
// same order whatever the number of threads: the result is exact (float32
// rounding only) and bit-for-bit reproducible.
//
// The sampling is mmcv's RoIAlign with a fixed sampling ratio g: bin
// (i, j) of box k averages the g*g bilinear samples at rows ys[k, i*g + a]
// and columns xs[k, j*g + b]. A sample more than one pixel outside the map
// reads nothing; one within a pixel of the border reads the border. The
// tap rule is `_bilinear_taps` of groie_tf/ops/roi_align.py, in the same
// float32 arithmetic, so both compute the same weights.
//
// Built at first use by groie_tf/ops/native.py.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/platform/threadpool.h"

namespace {

using ::tensorflow::DEVICE_CPU;
using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::Status;
using ::tensorflow::Tensor;
using ::tensorflow::TensorShape;
using ::tensorflow::TensorShapeUtils;
using ::tensorflow::errors::InvalidArgument;
namespace shape_inference = ::tensorflow::shape_inference;

// Channels of a work unit are a multiple of this (a 64-byte cache line).
constexpr int64_t kChannelQuantum = 16;
// Work units per thread: enough to balance them, few enough that each
// unit's taps move many channels at once.
constexpr int64_t kUnitsPerThread = 4;

// One bilinear tap pair along an axis: rows (or columns) low and high and
// their weights, both 0 for a sample outside [-1, size].
struct Taps {
  int64_t low, high;
  float w_low, w_high;
};

Taps BilinearTaps(float coord, int64_t size) {
  const float size_f = static_cast<float>(size);
  const float mask = (coord >= -1.0f && coord <= size_f) ? 1.0f : 0.0f;
  float clamped = std::max(coord, 0.0f);
  float low = std::floor(clamped);
  float high;
  if (low >= size_f - 1.0f) {  // at the edge: both taps on the last pixel
    low = size_f - 1.0f;
    high = size_f - 1.0f;
    clamped = size_f - 1.0f;
  } else {
    high = low + 1.0f;
  }
  const float frac = clamped - low;
  return {static_cast<int64_t>(low), static_cast<int64_t>(high),
          (1.0f - frac) * mask, frac * mask};
}

}  // namespace

REGISTER_OP("GroieRoiAlignGrad")
    .Input("upstream: float")
    .Input("ys: float")
    .Input("xs: float")
    .Input("box_indices: int32")
    .Input("feature_shape: int32")
    .Attr("sampling_ratio: int >= 1")
    .Output("grad: float")
    .SetShapeFn([](shape_inference::InferenceContext* c) {
      shape_inference::ShapeHandle shape;
      TF_RETURN_IF_ERROR(c->MakeShapeFromShapeTensor(4, &shape));
      TF_RETURN_IF_ERROR(c->WithRank(shape, 4, &shape));
      c->set_output(0, shape);
      return Status();
    })
    .Doc(R"doc(
The gradient of RoIAlign (mmcv's average mode) with respect to its features.

upstream: [K, P, P, C], the gradient of the pooled bins.
ys: [K, P * sampling_ratio], the sample rows of each box, in map pixels.
xs: [K, P * sampling_ratio], its sample columns.
box_indices: [K], the image of each box.
feature_shape: [4], the features' shape [B, H, W, C].
grad: [B, H, W, C].
)doc");

class GroieRoiAlignGradOp : public OpKernel {
 public:
  explicit GroieRoiAlignGradOp(OpKernelConstruction* context)
      : OpKernel(context) {
    OP_REQUIRES_OK(context, context->GetAttr("sampling_ratio", &ratio_));
  }

  void Compute(OpKernelContext* context) override {
    const Tensor& upstream = context->input(0);
    const Tensor& ys = context->input(1);
    const Tensor& xs = context->input(2);
    const Tensor& box_indices = context->input(3);
    const Tensor& feature_shape = context->input(4);
    OP_REQUIRES(context, upstream.dims() == 4,
                InvalidArgument("upstream must be [K, P, P, C], got ",
                                upstream.shape().DebugString()));
    const int64_t num_boxes = upstream.dim_size(0);
    const int64_t size = upstream.dim_size(1);
    const int64_t channels = upstream.dim_size(3);
    const int64_t samples = size * ratio_;
    OP_REQUIRES(context, upstream.dim_size(2) == size,
                InvalidArgument("upstream bins must be square, got ",
                                upstream.shape().DebugString()));
    for (const Tensor* coords : {&ys, &xs}) {
      OP_REQUIRES(context,
                  coords->dims() == 2 && coords->dim_size(0) == num_boxes &&
                      coords->dim_size(1) == samples,
                  InvalidArgument("ys and xs must be [", num_boxes, ", ",
                                  samples, "], got ",
                                  coords->shape().DebugString()));
    }
    OP_REQUIRES(context,
                box_indices.dims() == 1 && box_indices.dim_size(0) == num_boxes,
                InvalidArgument("box_indices must be [", num_boxes, "], got ",
                                box_indices.shape().DebugString()));
    OP_REQUIRES(context,
                TensorShapeUtils::IsVector(feature_shape.shape()) &&
                    feature_shape.NumElements() == 4,
                InvalidArgument("feature_shape must have 4 elements, got ",
                                feature_shape.shape().DebugString()));
    const auto dims = feature_shape.vec<int32_t>();
    const int64_t batch = dims(0), height = dims(1), width = dims(2);
    OP_REQUIRES(context, batch >= 0 && height > 0 && width > 0,
                InvalidArgument("feature_shape must be positive, got [",
                                dims(0), ", ", dims(1), ", ", dims(2), ", ",
                                dims(3), "]"));
    OP_REQUIRES(context, dims(3) == channels,
                InvalidArgument("feature_shape has ", dims(3),
                                " channels, upstream ", channels));
    const auto image_of = box_indices.vec<int32_t>();
    for (int64_t k = 0; k < num_boxes; ++k) {
      OP_REQUIRES(context, image_of(k) >= 0 && image_of(k) < batch,
                  InvalidArgument("box_indices[", k, "] = ", image_of(k),
                                  " is not an image of the ", batch));
    }

    Tensor* grad = nullptr;
    OP_REQUIRES_OK(context,
                   context->allocate_output(
                       0, TensorShape({batch, height, width, channels}),
                       &grad));
    float* out = grad->flat<float>().data();
    std::fill(out, out + grad->NumElements(), 0.0f);
    if (num_boxes == 0 || channels == 0) return;

    const float* up = upstream.flat<float>().data();
    const float* y_data = ys.flat<float>().data();
    const float* x_data = xs.flat<float>().data();
    const float scale = 1.0f / static_cast<float>(ratio_ * ratio_);
    // Split each image's channels into as few blocks as keep every thread
    // busy: a tap then updates one long run of channels.
    auto* workers = context->device()->tensorflow_cpu_worker_threads()->workers;
    const int64_t wanted_units =
        kUnitsPerThread * std::max<int64_t>(1, workers->NumThreads());
    const int64_t blocks_wanted = std::max<int64_t>(
        1, (wanted_units + std::max<int64_t>(batch, 1) - 1) /
               std::max<int64_t>(batch, 1));
    int64_t block = (channels + blocks_wanted - 1) / blocks_wanted;
    block = std::max<int64_t>(
        kChannelQuantum,
        (block + kChannelQuantum - 1) / kChannelQuantum * kChannelQuantum);
    const int64_t blocks = (channels + block - 1) / block;
    const int64_t ratio = ratio_;

    // Work unit u: image u / blocks, channels [c0, c1) of block u % blocks.
    auto work = [&](int64_t begin, int64_t end) {
      std::vector<Taps> row_taps(samples), col_taps(samples);
      for (int64_t unit = begin; unit < end; ++unit) {
        const int64_t image = unit / blocks;
        const int64_t c0 = (unit % blocks) * block;
        const int64_t c1 = std::min(channels, c0 + block);
        float* image_out = out + image * height * width * channels;
        for (int64_t k = 0; k < num_boxes; ++k) {
          if (image_of(k) != image) continue;
          for (int64_t s = 0; s < samples; ++s) {
            row_taps[s] = BilinearTaps(y_data[k * samples + s], height);
            col_taps[s] = BilinearTaps(x_data[k * samples + s], width);
          }
          for (int64_t i = 0; i < size; ++i) {
            for (int64_t j = 0; j < size; ++j) {
              const float* bin = up + ((k * size + i) * size + j) * channels;
              for (int64_t a = 0; a < ratio; ++a) {
                const Taps& ry = row_taps[i * ratio + a];
                for (int64_t b = 0; b < ratio; ++b) {
                  const Taps& rx = col_taps[j * ratio + b];
                  const int64_t rows[2] = {ry.low, ry.high};
                  const float wy[2] = {ry.w_low, ry.w_high};
                  const int64_t cols[2] = {rx.low, rx.high};
                  const float wx[2] = {rx.w_low, rx.w_high};
                  for (int t = 0; t < 4; ++t) {
                    // (wy * wx) times 1/g^2, then times the upstream
                    // value. The sparse operator divides by g^2 instead:
                    // the same bits for g a power of two, one rounding
                    // apart otherwise.
                    const float w = (wy[t / 2] * wx[t % 2]) * scale;
                    float* pixel =
                        image_out + (rows[t / 2] * width + cols[t % 2]) *
                                        channels;
                    for (int64_t c = c0; c < c1; ++c) pixel[c] += w * bin[c];
                  }
                }
              }
            }
          }
        }
      }
    };
    const int64_t boxes_per_image = std::max<int64_t>(
        1, num_boxes / std::max<int64_t>(batch, 1));
    const int64_t cost_per_unit =
        boxes_per_image * samples * samples * 4 * block * 2;
    workers->ParallelFor(batch * blocks, cost_per_unit, work);
  }

 private:
  int ratio_;
};

REGISTER_KERNEL_BUILDER(Name("GroieRoiAlignGrad").Device(DEVICE_CPU),
                        GroieRoiAlignGradOp);
