// The tensor cores' arithmetic (see mma_model.cpp for the model and its source). Plain C so the
// Rust side (src/gpu/mma_model.rs) calls the same code the emulator's mma executes.
#pragma once
#include <cstdint>

extern "C" {
// c + sum over k < 16 of a[k] * b[k] (bf16 bits) as one mma accumulates it on `arch` (80: A100,
// 90: H100/H200).
float ddpm_mma_dot_bf16(int arch, const uint16_t* a, const uint16_t* b, float c);
// D = A B + C for row-major A [16][16], B [16][8] (bf16 bits), C and D [16][8] (f32).
void ddpm_mma_m16n8k16_bf16(int arch, const uint16_t* a, const uint16_t* b, const float* c, float* d);
}
