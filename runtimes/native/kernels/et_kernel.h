// What every seqedge ExecuTorch kernel includes and names: the kernel/registry/threadpool headers and the
// ExecuTorch types a boxed kernel handles (Tensor, EValue, the runtime context, the stack Span).
#pragma once

#include <executorch/runtime/kernel/kernel_includes.h>
#include <executorch/runtime/kernel/operator_registry.h>
#include <executorch/runtime/kernel/thread_parallel_interface.h>

namespace seqedge {

using executorch::aten::ScalarType;
using executorch::aten::Tensor;
using executorch::runtime::Error;
using executorch::runtime::EValue;
using executorch::runtime::KernelRuntimeContext;
using executorch::runtime::Span;

}  // namespace seqedge
