// Programmatic dependent launch (Hopper on): a kernel launched with the programmatic
// stream-serialization attribute may start while the kernel before it in the stream still runs.
// Every kernel so launched calls pdl_wait() before it reads anything an earlier kernel wrote or
// writes anything an earlier kernel reads; what it may do before touches only constant data
// (a weight prefetch into L2 is the intended use, not written yet). pdl_trigger() lets the next
// kernel's blocks be scheduled now, to wait in their own pdl_wait() (which returns once this
// grid has completed and its writes are visible). Launched without the attribute, both return
// at once. Before compute capability 9.0 both compile to nothing, and the host never sets the
// attribute for PTX built for those targets.
#pragma once

__device__ __forceinline__ void pdl_trigger() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

// The first thing a decode-step kernel does: let the next kernel be scheduled, then wait for
// the previous one.
__device__ __forceinline__ void pdl_begin() {
    pdl_trigger();
    pdl_wait();
}
