// The slice of onnxruntime's C ABI that seqedge's custom-op library uses, declared here because no
// package this project can install ships onnxruntime's headers (the wheels carry only the libraries).
//
// onnxruntime's API is a table of function pointers (`OrtApi`) that only ever grows: an entry keeps its
// position in every release after the one that added it. A library gets the table from the
// `OrtApiBase*` handed to its `RegisterCustomOps` and calls entries by position. The positions below
// were counted from onnxruntime's published API (and spot-checked in onnxruntime 1.32.0's own table:
// CreateStatus/GetErrorMessage round trip, GetBuildInfoString, the key-value-pair calls around
// KernelContext_ParallelFor; Has/GetSessionConfigEntry, which read back the value a session was given, and
// GetTensorElementTypeAndShapeDataReference, at byte 3,312 of the table in the ort-sys crate's bindings for
// API 24); tests/test_ort_kernels.py calls every slot declared here through real
// sessions — registration, inputs, shapes, outputs, the thread pool, error statuses — so a wrong count
// fails a test, never a user's session.
//
// A custom op is a struct of callbacks (`CustomOp`) whose leading `version` says how many of its fields
// onnxruntime may read; 16 is the first version with the status-returning CreateKernelV2/KernelComputeV2.
#pragma once

#include <cstddef>
#include <cstdint>

namespace seqedge::ort {

struct Status;         // OrtStatus*: nullptr is success
struct SessionOptions; // OrtSessionOptions
struct Value;          // OrtValue
struct KernelInfo;     // OrtKernelInfo
struct KernelContext;  // OrtKernelContext
struct OpDomain;       // OrtCustomOpDomain
struct TypeAndShape;   // OrtTensorTypeAndShapeInfo

constexpr uint32_t kApiVersion = 17;    // the table version this library asks for (onnxruntime >= 1.17)
constexpr uint32_t kCustomOpVersion = 16;
constexpr int kFloat = 1;               // ONNXTensorElementDataType FLOAT
constexpr int kUint8 = 2;               //   UINT8
constexpr int kInt64 = 7;               //   INT64
constexpr int kFloat16 = 10;            //   FLOAT16
constexpr int kInvalidArgument = 2;     // OrtErrorCode ORT_INVALID_ARGUMENT
constexpr int kRequired = 0;            // OrtCustomOpInputOutputCharacteristic: a required input/output
constexpr int kOptional = 1;            //   an optional one (absent: KernelContext_GetInput gives nullptr)

// Positions in the OrtApi table.
enum Slot : size_t {
  kCreateStatus = 0,
  kCreateCustomOpDomain = 26,
  kCustomOpDomainAdd = 27,
  kAddCustomOpDomain = 28,
  kGetTensorMutableData = 51,
  kGetTensorElementType = 60,
  kGetDimensionsCount = 61,
  kGetDimensions = 62,
  kGetTensorTypeAndShape = 65,
  kKernelContextGetInputCount = 88,
  kKernelContextGetOutputCount = 89,
  kKernelContextGetInput = 90,
  kKernelContextGetOutput = 91,
  kReleaseTensorTypeAndShapeInfo = 99,
  kHasSessionConfigEntry = 237,
  kGetSessionConfigEntry = 238,
  kKernelContextParallelFor = 274,
  kGetTensorElementTypeAndShapeDataReference = 414,  // API 24 (onnxruntime 1.24)
};
constexpr uint32_t kShapeReferenceApiVersion = 24;

struct ApiBase {
  const void* const* (*GetApi)(uint32_t version);
  const char* (*GetVersionString)();
};

// Typed calls through the table.
class Api {
 public:
  // `shape_references`: the table has GetTensorElementTypeAndShapeDataReference (its onnxruntime serves API 24)
  Api(const void* const* table, bool shape_references) : t_(table), shape_references_(shape_references) {}

  bool shape_references() const { return shape_references_; }
  // a tensor's element type and dims without a TypeAndShape to allocate and free: *dims points into the tensor's
  // own shape (null where rank is 0), valid while the tensor is
  Status* type_and_dims(const Value* v, int* type, const int64_t** dims, size_t* rank) const {
    using Fn = Status* (*)(const Value*, int*, const int64_t**, size_t*);
    return call<Fn>(kGetTensorElementTypeAndShapeDataReference)(v, type, dims, rank);
  }

  Status* create_status(int code, const char* msg) const {
    return call<Status* (*)(int, const char*)>(kCreateStatus)(code, msg);
  }
  Status* create_domain(const char* name, OpDomain** out) const {
    return call<Status* (*)(const char*, OpDomain**)>(kCreateCustomOpDomain)(name, out);
  }
  Status* domain_add(OpDomain* domain, const void* op) const {
    return call<Status* (*)(OpDomain*, const void*)>(kCustomOpDomainAdd)(domain, op);
  }
  Status* add_domain(SessionOptions* options, OpDomain* domain) const {
    return call<Status* (*)(SessionOptions*, OpDomain*)>(kAddCustomOpDomain)(options, domain);
  }
  Status* input_count(const KernelContext* ctx, size_t* out) const {
    return call<Status* (*)(const KernelContext*, size_t*)>(kKernelContextGetInputCount)(ctx, out);
  }
  Status* output_count(const KernelContext* ctx, size_t* out) const {
    return call<Status* (*)(const KernelContext*, size_t*)>(kKernelContextGetOutputCount)(ctx, out);
  }
  Status* input(const KernelContext* ctx, size_t i, const Value** out) const {
    return call<Status* (*)(const KernelContext*, size_t, const Value**)>(kKernelContextGetInput)(ctx, i, out);
  }
  Status* output(KernelContext* ctx, size_t i, const int64_t* dims, size_t rank, Value** out) const {
    using Fn = Status* (*)(KernelContext*, size_t, const int64_t*, size_t, Value**);
    return call<Fn>(kKernelContextGetOutput)(ctx, i, dims, rank, out);
  }
  Status* data(const Value* v, void** out) const {
    // GetTensorMutableData takes a non-const OrtValue; inputs are only read through it
    return call<Status* (*)(const Value*, void**)>(kGetTensorMutableData)(v, out);
  }
  Status* type_and_shape(const Value* v, TypeAndShape** out) const {
    return call<Status* (*)(const Value*, TypeAndShape**)>(kGetTensorTypeAndShape)(v, out);
  }
  Status* element_type(const TypeAndShape* info, int* out) const {
    return call<Status* (*)(const TypeAndShape*, int*)>(kGetTensorElementType)(info, out);
  }
  Status* rank(const TypeAndShape* info, size_t* out) const {
    return call<Status* (*)(const TypeAndShape*, size_t*)>(kGetDimensionsCount)(info, out);
  }
  Status* dims(const TypeAndShape* info, int64_t* out, size_t n) const {
    return call<Status* (*)(const TypeAndShape*, int64_t*, size_t)>(kGetDimensions)(info, out, n);
  }
  void release(TypeAndShape* info) const { call<void (*)(TypeAndShape*)>(kReleaseTensorTypeAndShapeInfo)(info); }
  // whether the session options carry `key` (AddSessionConfigEntry), and its value (size: the buffer's bytes in,
  // the value's with its terminating zero out)
  Status* has_config(const SessionOptions* options, const char* key, int* has) const {
    return call<Status* (*)(const SessionOptions*, const char*, int*)>(kHasSessionConfigEntry)(options, key, has);
  }
  Status* config(const SessionOptions* options, const char* key, char* value, size_t* size) const {
    using Fn = Status* (*)(const SessionOptions*, const char*, char*, size_t*);
    return call<Fn>(kGetSessionConfigEntry)(options, key, value, size);
  }
  // fn(data, i) for i in [0, total), split over the session's intra-op threads
  Status* parallel_for(const KernelContext* ctx, void (*fn)(void*, size_t), size_t total, size_t batches,
                       void* data) const {
    using Fn = Status* (*)(const KernelContext*, void (*)(void*, size_t), size_t, size_t, void*);
    return call<Fn>(kKernelContextParallelFor)(ctx, fn, total, batches, data);
  }

 private:
  template <class Fn>
  Fn call(Slot slot) const {
    return reinterpret_cast<Fn>(const_cast<void*>(t_[slot]));
  }
  const void* const* t_;
  bool shape_references_;
};

// OrtCustomOp, field for field up to what version 16 lets onnxruntime read.
struct CustomOp {
  uint32_t version;
  void* (*CreateKernel)(const CustomOp*, const void* api, const KernelInfo*);
  const char* (*GetName)(const CustomOp*);
  const char* (*GetExecutionProviderType)(const CustomOp*);
  int (*GetInputType)(const CustomOp*, size_t);
  size_t (*GetInputTypeCount)(const CustomOp*);
  int (*GetOutputType)(const CustomOp*, size_t);
  size_t (*GetOutputTypeCount)(const CustomOp*);
  void (*KernelCompute)(void* kernel, KernelContext*);
  void (*KernelDestroy)(void* kernel);
  int (*GetInputCharacteristic)(const CustomOp*, size_t);
  int (*GetOutputCharacteristic)(const CustomOp*, size_t);
  int (*GetInputMemoryType)(const CustomOp*, size_t);  // OrtMemType; 0 = the provider's default
  int (*GetVariadicInputMinArity)(const CustomOp*);
  int (*GetVariadicInputHomogeneity)(const CustomOp*);
  int (*GetVariadicOutputMinArity)(const CustomOp*);
  int (*GetVariadicOutputHomogeneity)(const CustomOp*);
  Status* (*CreateKernelV2)(const CustomOp*, const void* api, const KernelInfo*, void** kernel);
  Status* (*KernelComputeV2)(void* kernel, KernelContext*);
};

}  // namespace seqedge::ort
