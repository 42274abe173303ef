// Kernel registration for the emulator. build.rs appends a table of DDPM_EMU_KERNEL(name) entries
// to each kernel file's host build; the Rust side reads the tables to find kernels by name and to
// check each launch's arguments (count, byte sizes, which ones are pointers) before running it.
#pragma once
#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <utility>

extern "C" {
struct ddpm_emu_kernel {
  const char* name;
  void (*entry)(void** args);
  uint32_t n_params;
  const uint32_t* param_sizes;
  const uint8_t* param_is_pointer;
};
}

namespace ddpm_emu {
template <class... A>
struct Signature {
  static constexpr uint32_t count = sizeof...(A);
  // One extra element so a kernel without parameters still has arrays of non-zero size.
  static constexpr uint32_t sizes[] = {(uint32_t)sizeof(A)..., 0};
  static constexpr uint8_t is_pointer[] = {(uint8_t)std::is_pointer_v<std::remove_cv_t<A>>..., 0};
};
template <class... A>
Signature<A...> signature_of(void (*)(A...));

// cuLaunchKernel's convention: args[i] points at the value of parameter i.
template <class... A, std::size_t... I>
void invoke(void (*f)(A...), void** args, std::index_sequence<I...>) {
  f(*static_cast<std::remove_cv_t<A>*>(args[I])...);
}
template <auto F>
void entry(void** args) {
  invoke(F, args, std::make_index_sequence<decltype(signature_of(F))::count>{});
}
}  // namespace ddpm_emu

#define DDPM_EMU_KERNEL(name)                                                       \
  ddpm_emu_kernel {                                                                 \
    #name, &::ddpm_emu::entry<&name>, decltype(::ddpm_emu::signature_of(&name))::count, \
        decltype(::ddpm_emu::signature_of(&name))::sizes,                           \
        decltype(::ddpm_emu::signature_of(&name))::is_pointer                       \
  }
