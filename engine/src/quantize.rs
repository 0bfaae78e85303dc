//! ggml's own block quantizer (`ggml_quantize_chunk`), for
//! [`transcribe_models::quantize_ggml`]: the same code whisper.cpp's `quantize` tool runs, so
//! a file quantized here is byte for byte what that tool writes.

#![allow(unsafe_code)]

use transcribe_models::QuantType;

/// Quantizes `data` (whole rows of `n_per_row` weights) to `quant` blocks with ggml.
///
/// # Panics
/// When `data.len()` is not a multiple of `n_per_row` or a row is not whole 32-weight blocks
/// (callers check both: [`transcribe_models::quantize_ggml`] does).
pub fn quantize_rows(quant: QuantType, data: &[f32], n_per_row: usize) -> Vec<u8> {
    assert!(n_per_row > 0 && data.len().is_multiple_of(n_per_row));
    assert!(n_per_row.is_multiple_of(quant.block_weights()));
    let rows = data.len() / n_per_row;
    let mut out = vec![0u8; quant.bytes_for(rows, n_per_row)];
    let ggml_type = quant.ggml_type() as whisper_rs_sys::ggml_type;
    // SAFETY: `out` holds exactly `rows` quantized rows of `quant` (sizes from ggml-common.h,
    // checked against ggml's return value below), `data` holds `rows * n_per_row` floats,
    // and these types need no importance matrix (`ggml_quantize_requires_imatrix` is false
    // for q4_0..q8_0), so a null imatrix is allowed. `ggml_quantize_init` (called inside
    // `ggml_quantize_chunk`) is idempotent and guarded by ggml's critical section.
    let written = unsafe {
        whisper_rs_sys::ggml_quantize_chunk(
            ggml_type,
            data.as_ptr(),
            out.as_mut_ptr().cast(),
            0,
            rows as i64,
            n_per_row as i64,
            std::ptr::null(),
        )
    };
    assert_eq!(written, out.len(), "ggml wrote an unexpected size");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use transcribe_models::quantize::quantize_q8_0_reference;

    #[test]
    fn ggml_q8_0_matches_the_reference() {
        let data: Vec<f32> = (0..4 * 384)
            .map(|i| ((i as f32) * 0.013).sin() * 0.3)
            .collect();
        assert_eq!(
            quantize_rows(QuantType::Q8_0, &data, 384),
            quantize_q8_0_reference(&data)
        );
    }

    #[test]
    fn every_type_has_the_expected_size() {
        let data = vec![0.25f32; 2 * 64];
        for q in QuantType::ALL {
            assert_eq!(quantize_rows(q, &data, 64).len(), q.bytes_for(2, 64), "{q}");
        }
    }
}
