// oneDNN convolutions for JAX on the CPU, as XLA FFI handlers.
//
// Three handlers, one per pass of an N-d (2D or 3D) convolution with
// channels-last activations (NHWC / NDHWC) and HWIO / DHWIO weights (flax's
// layouts):
//
//   JaxsegOnednnConvFwd          (x, w)  -> y    forward
//   JaxsegOnednnConvBwdData      (dy, w) -> dx   input gradient
//   JaxsegOnednnConvBwdWeights   (x, dy) -> dw   weight gradient (no bias)
//
// Attributes (all int64; the Python side, jaxseg/onednn/_ops.py, derives them
// from lax.conv_general_dilated's arguments):
//   transposed  0: convolution (XLA's window strides, rhs dilation, padding);
//               1: deconvolution (XLA's lhs dilation), the weights flipped in
//               every spatial axis (XLA correlates, oneDNN's deconvolution
//               scatters: the same sum with the kernel taps reversed).
//   strides, dilates (oneDNN's: rhs dilation - 1), padding_l, padding_r
//               one entry per spatial axis, oneDNN's meaning.
//   threads     OpenMP threads for the primitive (created and run with it).
//
// The activations are fixed to nhwc/ndhwc; the weights are `format_tag::any`
// so that oneDNN picks its blocked layout and its AVX-512 brgconv/jit
// kernels (with plain hwio weights the backward passes fall back to
// gemm:jit, 10x slower). The weights are reordered from HWIO into that
// layout on every call, and the weight gradient back into HWIO.
//
// Primitives (and the weight reorders) are created once per (pass, shapes,
// parameters, dtypes, threads) and kept in a mutex-guarded cache. The
// scratchpad is user-managed (oneDNN's library-managed scratchpad is per
// primitive and not safe for concurrent execution without
// DNNL_ENABLE_CONCURRENT_EXEC, which this build lacks), so concurrent calls
// from several XLA devices' threads each use their own thread-local arena.
//
// JaxsegOnednnPrepare (plain C, for ctypes) creates the primitives of one
// call at trace time and reports whether oneDNN implements it (and which
// implementation it chose), so that the Python side can fall back to XLA's
// convolution when it does not (e.g. bf16 on a CPU without AVX-512 BF16 or
// AVX2-VNNI-class support).

#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

using dnnl::memory;
using tag = dnnl::memory::format_tag;
using dt = dnnl::memory::data_type;

enum Pass : int64_t { kFwd = 0, kBwdData = 1, kBwdWeights = 2 };
// Element types in the ctypes API and the cache key.
enum DType : int64_t { kF32 = 0, kBF16 = 1 };

dt ToDnnl(int64_t t) { return t == kBF16 ? dt::bf16 : dt::f32; }

dnnl::engine& Engine() {
  static dnnl::engine* engine = new dnnl::engine(dnnl::engine::kind::cpu, 0);
  return *engine;
}

// One convolution call: sizes in oneDNN's order ({N, C, spatial...},
// {O, I, spatial...}, {N, O, spatial...}) plus the parameters.
struct Problem {
  int64_t pass = kFwd;
  int64_t transposed = 0;
  int64_t in_type = kF32;   // x, w, dy (the pass's inputs)
  int64_t out_type = kF32;  // the pass's output
  int64_t threads = 1;
  memory::dims src, wei, dst;  // x, w, y in oneDNN's logical order
  memory::dims strides, dilates, padding_l, padding_r;

  std::vector<int64_t> Key() const {
    std::vector<int64_t> k = {pass, transposed, in_type, out_type, threads,
                              static_cast<int64_t>(src.size())};
    for (const memory::dims* d : {&src, &wei, &dst, &strides, &dilates,
                                  &padding_l, &padding_r}) {
      k.insert(k.end(), d->begin(), d->end());
    }
    return k;
  }
};

tag ActTag(size_t ndims) { return ndims == 5 ? tag::ndhwc : tag::nhwc; }
tag WeiTag(size_t ndims) { return ndims == 5 ? tag::dhwio : tag::hwio; }

// A cached pass: the primitive, its memory descriptors and the reorder
// between the user's HWIO weights and the layout the primitive chose.
struct Entry {
  dnnl::primitive prim;
  memory::desc src_md, wei_md, dst_md;  // wei_md: the primitive's layout
  memory::desc user_wei_md;             // HWIO
  bool reorder = false;
  dnnl::primitive wei_reorder;  // HWIO -> wei_md, or wei_md -> HWIO (bwd w)
  memory::desc scratch_md, reorder_scratch_md;
  size_t scratch_bytes = 0, reorder_scratch_bytes = 0, wei_bytes = 0;
  std::string impl;
};

dnnl::primitive_attr UserScratchpad() {
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return attr;
}

// The primitive of one pass: the forward descriptor (the pass itself, or
// the hint of a backward pass, with the backward pass's element types), then
// the backward descriptor built on it. Fwd/BwdData/BwdWeights are oneDNN's
// convolution or deconvolution primitives (the same constructor shapes).
template <typename Fwd, typename BwdData, typename BwdWeights>
dnnl::primitive_desc_base Plan(const Problem& p, Entry* e,
                               dnnl::algorithm alg, dnnl::prop_kind fwd_prop,
                               const memory::desc& fwd_wei,
                               const memory::desc& any_wei,
                               const dnnl::primitive_attr& attr) {
  dnnl::engine& eng = Engine();
  typename Fwd::primitive_desc fwd(eng, fwd_prop, alg, e->src_md, fwd_wei,
                                   e->dst_md, p.strides, p.dilates,
                                   p.padding_l, p.padding_r, attr);
  if (p.pass == kFwd) {
    e->prim = Fwd(fwd);
    return fwd;
  }
  if (p.pass == kBwdData) {
    typename BwdData::primitive_desc bwd(eng, alg, e->src_md, any_wei,
                                         e->dst_md, p.strides, p.dilates,
                                         p.padding_l, p.padding_r, fwd, attr);
    e->prim = BwdData(bwd);
    return bwd;
  }
  typename BwdWeights::primitive_desc bwd(eng, alg, e->src_md, any_wei,
                                          e->dst_md, p.strides, p.dilates,
                                          p.padding_l, p.padding_r, fwd, attr);
  e->prim = BwdWeights(bwd);
  return bwd;
}

std::unique_ptr<Entry> Create(const Problem& p) {
  // oneDNN plans its thread partitioning for omp_get_max_threads() at
  // creation: create with the thread count the calls will run with.
  omp_set_num_threads(static_cast<int>(p.threads));
  auto e = std::make_unique<Entry>();
  const size_t nd = p.src.size();
  const dt in = ToDnnl(p.in_type), out = ToDnnl(p.out_type);
  // Each pass's own element types: x and y of the forward, dy and dx of
  // the data gradient, x, dy and dw of the weight gradient.
  const dt src_t = p.pass == kBwdData ? out : in;
  const dt dst_t = p.pass == kFwd ? out : in;
  const dt wei_t = p.pass == kBwdWeights ? out : in;
  e->src_md = memory::desc(p.src, src_t, ActTag(nd));
  e->dst_md = memory::desc(p.dst, dst_t, ActTag(nd));
  e->user_wei_md = memory::desc(p.wei, wei_t, WeiTag(nd));
  const memory::desc any_wei(p.wei, wei_t, tag::any);
  // The forward hint of a weight gradient: weights in the operands' type
  // (bf16 operands with f32 weights is no forward convolution).
  const memory::desc hint_wei(p.wei, in, tag::any);
  const dnnl::primitive_attr attr = UserScratchpad();
  dnnl::engine& eng = Engine();
  const auto fwd_prop = p.pass == kFwd ? dnnl::prop_kind::forward_inference
                                       : dnnl::prop_kind::forward_training;
  const memory::desc& fwd_wei = p.pass == kBwdWeights ? hint_wei : any_wei;
  const dnnl::primitive_desc_base pd =
      p.transposed
          ? Plan<dnnl::deconvolution_forward, dnnl::deconvolution_backward_data,
                 dnnl::deconvolution_backward_weights>(
                p, e.get(), dnnl::algorithm::deconvolution_direct, fwd_prop,
                fwd_wei, any_wei, attr)
          : Plan<dnnl::convolution_forward, dnnl::convolution_backward_data,
                 dnnl::convolution_backward_weights>(
                p, e.get(), dnnl::algorithm::convolution_direct, fwd_prop,
                fwd_wei, any_wei, attr);
  e->wei_md = p.pass == kBwdWeights
                  ? pd.query_md(dnnl::query::exec_arg_md, DNNL_ARG_DIFF_WEIGHTS)
                  : pd.query_md(dnnl::query::exec_arg_md, DNNL_ARG_WEIGHTS);
  e->scratch_md = pd.scratchpad_desc();
  e->scratch_bytes = e->scratch_md.get_size();
  e->impl = pd.impl_info_str();
  e->wei_bytes = e->wei_md.get_size();
  e->reorder = e->wei_md != e->user_wei_md;
  if (e->reorder) {
    const memory::desc& from =
        p.pass == kBwdWeights ? e->wei_md : e->user_wei_md;
    const memory::desc& to = p.pass == kBwdWeights ? e->user_wei_md : e->wei_md;
    dnnl::reorder::primitive_desc rpd(eng, from, eng, to, attr);
    e->wei_reorder = dnnl::reorder(rpd);
    e->reorder_scratch_md = rpd.scratchpad_desc();
    e->reorder_scratch_bytes = e->reorder_scratch_md.get_size();
  }
  return e;
}

// The cache: entries are never removed, so references stay valid.
std::mutex cache_mutex;
std::map<std::vector<int64_t>, std::unique_ptr<Entry>>& Cache() {
  static auto* cache = new std::map<std::vector<int64_t>,
                                    std::unique_ptr<Entry>>();
  return *cache;
}

const Entry& Get(const Problem& p) {
  std::vector<int64_t> key = p.Key();
  {
    std::lock_guard<std::mutex> lock(cache_mutex);
    auto it = Cache().find(key);
    if (it != Cache().end()) return *it->second;
  }
  // Created outside the lock: creation takes milliseconds, and two threads
  // racing on one key each create one and keep the first.
  std::unique_ptr<Entry> e = Create(p);
  std::lock_guard<std::mutex> lock(cache_mutex);
  auto [it, inserted] = Cache().emplace(std::move(key), std::move(e));
  return *it->second;
}

// A growing 64-byte-aligned buffer per thread, carved into the call's
// temporaries (scratchpads, weights in the primitive's layout).
class Arena {
 public:
  ~Arena() { std::free(data_); }
  char* Reserve(size_t bytes) {
    if (bytes > size_) {
      std::free(data_);
      size_ = (bytes + 4095) / 4096 * 4096;
      data_ = static_cast<char*>(std::aligned_alloc(64, size_));
      if (data_ == nullptr) {
        size_ = 0;
        throw std::bad_alloc();
      }
    }
    return data_;
  }

 private:
  char* data_ = nullptr;
  size_t size_ = 0;
};

size_t Align(size_t bytes) { return (bytes + 63) / 64 * 64; }

// Reverses the order of the taps of an HWIO/DHWIO array (flips every
// spatial axis): block t of `block` bytes goes to block taps - 1 - t.
void FlipTaps(const char* from, char* to, int64_t taps, size_t block) {
  for (int64_t t = 0; t < taps; ++t) {
    std::memcpy(to + (taps - 1 - t) * block, from + t * block, block);
  }
}

void FlipTapsInPlace(char* data, int64_t taps, size_t block) {
  std::vector<char> tmp(block);
  for (int64_t t = 0; t < taps / 2; ++t) {
    char* a = data + t * block;
    char* b = data + (taps - 1 - t) * block;
    std::memcpy(tmp.data(), a, block);
    std::memcpy(a, b, block);
    std::memcpy(b, tmp.data(), block);
  }
}

// Runs one pass. in0/in1/out are the handler's buffers: (x, w) -> y,
// (dy, w) -> dx or (x, dy) -> dw.
void Run(const Problem& p, void* in0, void* in1, void* out) {
  const Entry& e = Get(p);
  omp_set_num_threads(static_cast<int>(p.threads));
  thread_local Arena arena;
  thread_local std::unique_ptr<dnnl::stream> stream_ptr;
  if (!stream_ptr) stream_ptr = std::make_unique<dnnl::stream>(Engine());
  dnnl::stream& stream = *stream_ptr;
  dnnl::engine& eng = Engine();

  const int64_t taps = [&] {
    int64_t t = 1;
    for (size_t i = 2; i < p.wei.size(); ++i) t *= p.wei[i];
    return t;
  }();
  const size_t user_wei_bytes = e.user_wei_md.get_size();
  const size_t tap_bytes = user_wei_bytes / taps;
  const bool flip = p.transposed != 0;

  // Arena layout: [scratchpad | reorder scratchpad | weights in the
  // primitive's layout | flipped HWIO weights].
  const size_t off_rscratch = Align(e.scratch_bytes);
  const size_t off_wei = off_rscratch + Align(e.reorder_scratch_bytes);
  const size_t off_flip = off_wei + (e.reorder ? Align(e.wei_bytes) : 0);
  const size_t total =
      off_flip + (flip && p.pass != kBwdWeights ? Align(user_wei_bytes) : 0);
  char* base = arena.Reserve(std::max<size_t>(total, 64));
  memory scratch(e.scratch_md, eng, base);
  memory reorder_scratch(e.reorder_scratch_md, eng, base + off_rscratch);

  if (p.pass == kFwd || p.pass == kBwdData) {
    // The weights (in1), flipped for a deconvolution, then reordered.
    void* user_w = in1;
    if (flip) {
      FlipTaps(static_cast<const char*>(in1), base + off_flip, taps,
               tap_bytes);
      user_w = base + off_flip;
    }
    memory w_user(e.user_wei_md, eng, user_w);
    memory w(e.wei_md, eng, e.reorder ? base + off_wei : user_w);
    if (e.reorder) {
      e.wei_reorder.execute(stream, {{DNNL_ARG_FROM, w_user},
                                     {DNNL_ARG_TO, w},
                                     {DNNL_ARG_SCRATCHPAD, reorder_scratch}});
    }
    if (p.pass == kFwd) {
      memory src(e.src_md, eng, in0), dst(e.dst_md, eng, out);
      e.prim.execute(stream, {{DNNL_ARG_SRC, src},
                              {DNNL_ARG_WEIGHTS, w},
                              {DNNL_ARG_DST, dst},
                              {DNNL_ARG_SCRATCHPAD, scratch}});
    } else {
      memory diff_dst(e.dst_md, eng, in0), diff_src(e.src_md, eng, out);
      e.prim.execute(stream, {{DNNL_ARG_DIFF_DST, diff_dst},
                              {DNNL_ARG_WEIGHTS, w},
                              {DNNL_ARG_DIFF_SRC, diff_src},
                              {DNNL_ARG_SCRATCHPAD, scratch}});
    }
  } else {
    memory src(e.src_md, eng, in0), diff_dst(e.dst_md, eng, in1);
    memory dw_user(e.user_wei_md, eng, out);
    memory dw(e.wei_md, eng, e.reorder ? base + off_wei : out);
    e.prim.execute(stream, {{DNNL_ARG_SRC, src},
                            {DNNL_ARG_DIFF_DST, diff_dst},
                            {DNNL_ARG_DIFF_WEIGHTS, dw},
                            {DNNL_ARG_SCRATCHPAD, scratch}});
    if (e.reorder) {
      e.wei_reorder.execute(stream, {{DNNL_ARG_FROM, dw},
                                     {DNNL_ARG_TO, dw_user},
                                     {DNNL_ARG_SCRATCHPAD, reorder_scratch}});
    }
  }
  stream.wait();
  if (flip && p.pass == kBwdWeights) {
    FlipTapsInPlace(static_cast<char*>(out), taps, tap_bytes);
  }
}

// ---------------------------------------------------------------------------
// FFI handlers.

int64_t ToDType(ffi::DataType t) {
  switch (t) {
    case ffi::DataType::F32:
      return kF32;
    case ffi::DataType::BF16:
      return kBF16;
    default:
      return -1;
  }
}

// XLA's channels-last dims (N, spatial..., C) -> oneDNN's (N, C, spatial...);
// HWIO (spatial..., I, O) -> (O, I, spatial...).
memory::dims ActDims(ffi::AnyBuffer::Dimensions d) {
  memory::dims out = {d[0], d[d.size() - 1]};
  for (size_t i = 1; i + 1 < d.size(); ++i) out.push_back(d[i]);
  return out;
}

memory::dims WeiDims(ffi::AnyBuffer::Dimensions d) {
  const size_t n = d.size();
  memory::dims out = {d[n - 1], d[n - 2]};
  for (size_t i = 0; i + 2 < n; ++i) out.push_back(d[i]);
  return out;
}

memory::dims ToDims(ffi::Span<const int64_t> s) {
  return memory::dims(s.begin(), s.end());
}

ffi::Error Handle(int64_t pass, ffi::AnyBuffer in0, ffi::AnyBuffer in1,
                  ffi::Result<ffi::AnyBuffer> out, int64_t transposed,
                  ffi::Span<const int64_t> strides,
                  ffi::Span<const int64_t> dilates,
                  ffi::Span<const int64_t> padding_l,
                  ffi::Span<const int64_t> padding_r, int64_t threads) {
  Problem p;
  p.pass = pass;
  p.transposed = transposed;
  p.threads = std::max<int64_t>(1, threads);
  p.in_type = ToDType(in0.element_type());
  p.out_type = ToDType(out->element_type());
  if (p.in_type < 0 || p.out_type < 0 ||
      ToDType(in1.element_type()) != p.in_type) {
    return ffi::Error::InvalidArgument(
        "jaxseg.onednn: element types must be f32 or bf16 (inputs alike)");
  }
  const size_t rank = in0.dimensions().size();
  if ((rank != 4 && rank != 5) || in1.dimensions().size() != rank ||
      out->dimensions().size() != rank || strides.size() != rank - 2 ||
      dilates.size() != rank - 2 || padding_l.size() != rank - 2 ||
      padding_r.size() != rank - 2) {
    return ffi::Error::InvalidArgument(
        "jaxseg.onednn: 2D or 3D channels-last convolutions only");
  }
  if (pass == kFwd) {
    p.src = ActDims(in0.dimensions());
    p.wei = WeiDims(in1.dimensions());
    p.dst = ActDims(out->dimensions());
  } else if (pass == kBwdData) {
    p.dst = ActDims(in0.dimensions());
    p.wei = WeiDims(in1.dimensions());
    p.src = ActDims(out->dimensions());
  } else {
    p.src = ActDims(in0.dimensions());
    p.dst = ActDims(in1.dimensions());
    p.wei = WeiDims(out->dimensions());
  }
  p.strides = ToDims(strides);
  p.dilates = ToDims(dilates);
  p.padding_l = ToDims(padding_l);
  p.padding_r = ToDims(padding_r);
  try {
    Run(p, in0.untyped_data(), in1.untyped_data(), out->untyped_data());
  } catch (const dnnl::error& err) {
    return ffi::Error::Internal(std::string("jaxseg.onednn: oneDNN: ") +
                                err.what());
  } catch (const std::exception& err) {
    return ffi::Error::Internal(std::string("jaxseg.onednn: ") + err.what());
  }
  return ffi::Error::Success();
}

ffi::Error Fwd(ffi::AnyBuffer x, ffi::AnyBuffer w,
               ffi::Result<ffi::AnyBuffer> y, int64_t transposed,
               ffi::Span<const int64_t> strides,
               ffi::Span<const int64_t> dilates,
               ffi::Span<const int64_t> padding_l,
               ffi::Span<const int64_t> padding_r, int64_t threads) {
  return Handle(kFwd, x, w, y, transposed, strides, dilates, padding_l,
                padding_r, threads);
}

ffi::Error BwdData(ffi::AnyBuffer dy, ffi::AnyBuffer w,
                   ffi::Result<ffi::AnyBuffer> dx, int64_t transposed,
                   ffi::Span<const int64_t> strides,
                   ffi::Span<const int64_t> dilates,
                   ffi::Span<const int64_t> padding_l,
                   ffi::Span<const int64_t> padding_r, int64_t threads) {
  return Handle(kBwdData, dy, w, dx, transposed, strides, dilates, padding_l,
                padding_r, threads);
}

ffi::Error BwdWeights(ffi::AnyBuffer x, ffi::AnyBuffer dy,
                      ffi::Result<ffi::AnyBuffer> dw, int64_t transposed,
                      ffi::Span<const int64_t> strides,
                      ffi::Span<const int64_t> dilates,
                      ffi::Span<const int64_t> padding_l,
                      ffi::Span<const int64_t> padding_r, int64_t threads) {
  return Handle(kBwdWeights, x, dy, dw, transposed, strides, dilates,
                padding_l, padding_r, threads);
}

}  // namespace

#define JAXSEG_ONEDNN_BINDING                 \
  ffi::Ffi::Bind()                            \
      .Arg<ffi::AnyBuffer>()                  \
      .Arg<ffi::AnyBuffer>()                  \
      .Ret<ffi::AnyBuffer>()                  \
      .Attr<int64_t>("transposed")            \
      .Attr<ffi::Span<const int64_t>>("strides")   \
      .Attr<ffi::Span<const int64_t>>("dilates")   \
      .Attr<ffi::Span<const int64_t>>("padding_l") \
      .Attr<ffi::Span<const int64_t>>("padding_r") \
      .Attr<int64_t>("threads")

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxsegOnednnConvFwd, Fwd,
                              JAXSEG_ONEDNN_BINDING);
XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxsegOnednnConvBwdData, BwdData,
                              JAXSEG_ONEDNN_BINDING);
XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxsegOnednnConvBwdWeights, BwdWeights,
                              JAXSEG_ONEDNN_BINDING);

// ---------------------------------------------------------------------------
// ctypes API.

extern "C" {

// Creates (and caches) the primitives of one pass, as a handler call with
// these sizes would. Sizes in XLA's order: x (N, spatial..., C), w
// (spatial..., I, O), y (N, spatial..., O); `rank` = 4 or 5. Returns 0 and
// the implementation's name in `info`, or 1 and oneDNN's message there
// (e.g. unimplemented for bf16 on this CPU).
__attribute__((visibility("default"))) int JaxsegOnednnPrepare(
    int64_t pass, int64_t transposed, int64_t in_type, int64_t out_type,
    int64_t threads, int64_t rank, const int64_t* x, const int64_t* w,
    const int64_t* y, const int64_t* strides, const int64_t* dilates,
    const int64_t* padding_l, const int64_t* padding_r, char* info,
    int64_t info_size) {
  auto write = [&](const std::string& s) {
    if (info_size > 0) {
      std::snprintf(info, static_cast<size_t>(info_size), "%s", s.c_str());
    }
  };
  try {
    Problem p;
    p.pass = pass;
    p.transposed = transposed;
    p.in_type = in_type;
    p.out_type = out_type;
    p.threads = std::max<int64_t>(1, threads);
    p.src = ActDims(ffi::AnyBuffer::Dimensions(x, rank));
    p.wei = WeiDims(ffi::AnyBuffer::Dimensions(w, rank));
    p.dst = ActDims(ffi::AnyBuffer::Dimensions(y, rank));
    p.strides = memory::dims(strides, strides + rank - 2);
    p.dilates = memory::dims(dilates, dilates + rank - 2);
    p.padding_l = memory::dims(padding_l, padding_l + rank - 2);
    p.padding_r = memory::dims(padding_r, padding_r + rank - 2);
    const Entry& e = Get(p);
    write(e.impl);
    return 0;
  } catch (const std::exception& err) {
    write(err.what());
    return 1;
  }
}

// The number of cached passes (tests check that a step reuses them).
__attribute__((visibility("default"))) int64_t JaxsegOnednnCacheSize() {
  std::lock_guard<std::mutex> lock(cache_mutex);
  return static_cast<int64_t>(Cache().size());
}

// oneDNN's version, major * 10000 + minor * 100 + patch.
__attribute__((visibility("default"))) int64_t JaxsegOnednnVersion() {
  const dnnl_version_t* v = dnnl_version();
  return v->major * 10000 + v->minor * 100 + v->patch;
}

}  // extern "C"
