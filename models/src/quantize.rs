//! Quantizing a whisper ggml file: the 2-D weight matrices become q8_0/q5_x/q4_x blocks,
//! everything else is copied as it is.
//!
//! The file layout and the choice of tensors follow whisper.cpp's loader (1.8.3,
//! `whisper_model_load`): it creates every 2-D `.weight` matrix of the encoder and decoder
//! (attention, MLP, the token embedding) with the file's weight type, the 3-D convolution
//! kernels as f16, and the positional embeddings, biases and layer norms as f32. The header's
//! `ftype` is ggml's `GGML_FTYPE_MOSTLY_*` code plus `GGML_QNT_VERSION * 1000`
//! (`GGML_QNT_VERSION` 2 in ggml.h), which the loader splits apart again.
//!
//! The block arithmetic itself is not here: [`quantize_ggml`] takes a row quantizer, which
//! `transcribe-engine` supplies from ggml's own `ggml_quantize_chunk`, so the bytes are exactly
//! what whisper.cpp's quantizer writes. This module stays free of C and is tested with a
//! reference q8_0 written in Rust.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::str::FromStr;

use crate::error::ModelError;
use crate::ggml::{inspect_ggml, write_atomically};
use crate::half::f16_to_f32;

/// ggml's `GGML_QNT_VERSION` (ggml.h): the quantization format version written into `ftype`.
pub const GGML_QNT_VERSION: i32 = 2;

/// ggml's `GGML_QNT_VERSION_FACTOR` (ggml.h).
pub const GGML_QNT_VERSION_FACTOR: i32 = 1000;

/// Byte offset of `ftype` in a whisper ggml file: after the magic and ten `i32` hparams.
const FTYPE_OFFSET: u64 = 4 + 10 * 4;

/// A ggml block quantization whisper.cpp can load and run on every backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QuantType {
    /// 4-bit, one f16 scale per 32 weights.
    Q4_0,
    /// 4-bit, f16 scale and minimum per 32 weights.
    Q4_1,
    /// 5-bit, one f16 scale per 32 weights.
    Q5_0,
    /// 5-bit, f16 scale and minimum per 32 weights.
    Q5_1,
    /// 8-bit, one f16 scale per 32 weights.
    Q8_0,
}

impl QuantType {
    /// Every type, smallest first.
    pub const ALL: [QuantType; 5] = [
        QuantType::Q4_0,
        QuantType::Q4_1,
        QuantType::Q5_0,
        QuantType::Q5_1,
        QuantType::Q8_0,
    ];

    /// The name used on the command line and in file names (`q5_0`).
    pub fn as_str(self) -> &'static str {
        match self {
            QuantType::Q4_0 => "q4_0",
            QuantType::Q4_1 => "q4_1",
            QuantType::Q5_0 => "q5_0",
            QuantType::Q5_1 => "q5_1",
            QuantType::Q8_0 => "q8_0",
        }
    }

    /// ggml's `enum ggml_type` value (ggml.h).
    pub fn ggml_type(self) -> i32 {
        match self {
            QuantType::Q4_0 => 2,
            QuantType::Q4_1 => 3,
            QuantType::Q5_0 => 6,
            QuantType::Q5_1 => 7,
            QuantType::Q8_0 => 8,
        }
    }

    /// ggml's `enum ggml_ftype` value (`GGML_FTYPE_MOSTLY_*`, ggml.h), without the version.
    pub fn ftype(self) -> i32 {
        match self {
            QuantType::Q4_0 => 2,
            QuantType::Q4_1 => 3,
            QuantType::Q8_0 => 7,
            QuantType::Q5_0 => 8,
            QuantType::Q5_1 => 9,
        }
    }

    /// Weights per block (`QK4_0` ... `QK8_0`, all 32 in ggml-common.h).
    pub fn block_weights(self) -> usize {
        32
    }

    /// Bytes per block (`sizeof(block_q*)` in ggml-common.h).
    pub fn block_bytes(self) -> usize {
        match self {
            QuantType::Q4_0 => 18,
            QuantType::Q4_1 => 20,
            QuantType::Q5_0 => 22,
            QuantType::Q5_1 => 24,
            QuantType::Q8_0 => 34,
        }
    }

    /// Bytes of `rows` rows of `n_per_row` weights.
    pub fn bytes_for(self, rows: usize, n_per_row: usize) -> usize {
        rows * n_per_row / self.block_weights() * self.block_bytes()
    }
}

impl std::fmt::Display for QuantType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for QuantType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        QuantType::ALL
            .into_iter()
            .find(|q| q.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                let names: Vec<_> = QuantType::ALL.iter().map(|q| q.as_str()).collect();
                format!("unknown quantization `{s}` (one of {})", names.join(", "))
            })
    }
}

/// Whether whisper.cpp loads the tensor `name` of `shape` (outermost first) with the file's
/// weight type: every 2-D matrix except the two positional embeddings (f32 in the loader).
pub fn is_quantized_tensor(name: &str, shape: &[usize]) -> bool {
    shape.len() == 2 && name.ends_with(".weight")
}

/// A row quantizer: `(type, rows of weights, weights per row)` to the type's blocks.
pub type RowQuantizer<'a> = dyn FnMut(QuantType, &[f32], usize) -> Vec<u8> + 'a;

/// What [`quantize_ggml`] did.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct QuantizeReport {
    /// The type written.
    pub quant: String,
    /// Tensors quantized.
    pub quantized: usize,
    /// Tensors copied unchanged.
    pub copied: usize,
    /// Size of the input file.
    pub bytes_in: u64,
    /// Size of the output file.
    pub bytes_out: u64,
}

/// Writes a copy of the f16/f32 whisper ggml file `input` to `out` with its weight matrices
/// quantized to `quant` by `quantize_rows(quant, data, n_per_row)`, which must return
/// [`QuantType::bytes_for`] bytes for `data.len() / n_per_row` rows. Written atomically.
///
/// # Errors
/// [`ModelError::GgmlFormat`] when `input` is not a whisper ggml file, is already quantized,
/// or a matrix's rows are not whole blocks; [`ModelError::Io`] on read or write failure.
pub fn quantize_ggml(
    input: &Path,
    out: &Path,
    quant: QuantType,
    quantize_rows: &mut RowQuantizer<'_>,
) -> Result<QuantizeReport, ModelError> {
    let summary = inspect_ggml(input)?;
    let format_err = |offset: u64, reason: String| ModelError::GgmlFormat {
        path: input.to_owned(),
        offset,
        reason,
    };
    let base_ftype = summary.hparams.ftype % GGML_QNT_VERSION_FACTOR;
    if base_ftype > 1 {
        return Err(format_err(
            FTYPE_OFFSET,
            format!("already quantized (ftype {})", summary.hparams.ftype),
        ));
    }
    let header_end = match summary.tensors.first() {
        Some(t) => t.data_offset - (12 + 4 * t.shape.len() + t.name.len()) as u64,
        None => return Err(format_err(summary.bytes, "no tensors".into())),
    };
    let mut file = BufReader::with_capacity(
        1 << 20,
        File::open(input).map_err(|e| ModelError::io("opening", input, e))?,
    );
    let read_io = |e| ModelError::io("reading", input, e);
    let mut header = vec![0u8; header_end as usize];
    file.read_exact(&mut header).map_err(read_io)?;
    let ftype = quant.ftype() + GGML_QNT_VERSION * GGML_QNT_VERSION_FACTOR;
    let at = FTYPE_OFFSET as usize;
    header[at..at + 4].copy_from_slice(&ftype.to_le_bytes());

    let (mut quantized, mut copied) = (0, 0);
    write_atomically(out, |w| {
        let write_io = |e| ModelError::io("writing", out, e);
        w.write_all(&header).map_err(write_io)?;
        for t in &summary.tensors {
            file.seek(SeekFrom::Start(t.data_offset)).map_err(read_io)?;
            let mut data = vec![0u8; t.data_len as usize];
            file.read_exact(&mut data).map_err(read_io)?;
            let n_per_row = *t.shape.last().unwrap_or(&1);
            let quantize = is_quantized_tensor(&t.name, &t.shape);
            if quantize && !n_per_row.is_multiple_of(quant.block_weights()) {
                return Err(format_err(
                    t.data_offset,
                    format!(
                        "tensor `{}` rows of {n_per_row} are not whole {}-weight blocks",
                        t.name,
                        quant.block_weights()
                    ),
                ));
            }
            let ttype = if quantize {
                quant.ggml_type()
            } else {
                t.ggml_type
            };
            w.write_all(&(t.shape.len() as i32).to_le_bytes())
                .map_err(write_io)?;
            w.write_all(&(t.name.len() as i32).to_le_bytes())
                .map_err(write_io)?;
            w.write_all(&ttype.to_le_bytes()).map_err(write_io)?;
            for &d in t.shape.iter().rev() {
                w.write_all(&(d as i32).to_le_bytes()).map_err(write_io)?;
            }
            w.write_all(t.name.as_bytes()).map_err(write_io)?;
            if !quantize {
                copied += 1;
                w.write_all(&data).map_err(write_io)?;
                continue;
            }
            let floats: Vec<f32> = match t.ggml_type {
                0 => data
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect(),
                1 => data
                    .chunks_exact(2)
                    .map(|b| f16_to_f32(u16::from_le_bytes([b[0], b[1]])))
                    .collect(),
                other => {
                    return Err(format_err(
                        t.data_offset,
                        format!("tensor `{}` is already of ggml type {other}", t.name),
                    ));
                }
            };
            let rows = floats.len() / n_per_row;
            let bytes = quantize_rows(quant, &floats, n_per_row);
            if bytes.len() != quant.bytes_for(rows, n_per_row) {
                return Err(format_err(
                    t.data_offset,
                    format!(
                        "quantizer returned {} bytes for `{}`, expected {}",
                        bytes.len(),
                        t.name,
                        quant.bytes_for(rows, n_per_row)
                    ),
                ));
            }
            w.write_all(&bytes).map_err(write_io)?;
            quantized += 1;
        }
        Ok(())
    })?;
    let bytes_out = std::fs::metadata(out)
        .map_err(|e| ModelError::io("reading", out, e))?
        .len();
    Ok(QuantizeReport {
        quant: quant.as_str().to_owned(),
        quantized,
        copied,
        bytes_in: summary.bytes,
        bytes_out,
    })
}

/// q8_0 in plain Rust, after ggml's `quantize_row_q8_0_ref` (ggml-quants.c): per block of 32,
/// `d = max|x| / 127` stored as f16, `q = round(x / d)`. The reference the tests check
/// ggml's quantizer (through `transcribe-engine`) against.
pub fn quantize_q8_0_reference(data: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() / 32 * 34);
    for block in data.chunks(32) {
        let amax = block.iter().fold(0f32, |m, x| m.max(x.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.extend_from_slice(&crate::half::f32_to_f16(d).to_le_bytes());
        for &x in block {
            out.push((x * id).round() as i8 as u8);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ggml::{FTYPE_F16, Hparams, synth_ggml};

    fn small() -> Hparams {
        Hparams {
            n_vocab: 51864,
            n_audio_ctx: 6,
            n_audio_state: 32,
            n_audio_head: 2,
            n_audio_layer: 1,
            n_text_ctx: 5,
            n_text_state: 32,
            n_text_head: 2,
            n_text_layer: 1,
            n_mels: 80,
            ftype: FTYPE_F16,
        }
    }

    fn vocab(hp: &Hparams) -> Vec<Vec<u8>> {
        (0..hp.eot_id())
            .map(|i| format!("t{i}").into_bytes())
            .collect()
    }

    #[test]
    fn names_round_trip_and_sizes_match_ggml() -> Result<(), String> {
        for q in QuantType::ALL {
            assert_eq!(q.as_str().parse::<QuantType>()?, q);
        }
        assert!("q3_k".parse::<QuantType>().is_err());
        // 1280-wide rows (large-v3) are 40 blocks.
        assert_eq!(QuantType::Q8_0.bytes_for(2, 1280), 2 * 40 * 34);
        assert_eq!(QuantType::Q5_0.bytes_for(1, 384), 12 * 22);
        Ok(())
    }

    #[test]
    fn only_weight_matrices_are_quantized() {
        assert!(is_quantized_tensor(
            "decoder.token_embedding.weight",
            &[51864, 384]
        ));
        assert!(is_quantized_tensor(
            "encoder.blocks.0.attn.query.weight",
            &[384, 384]
        ));
        assert!(!is_quantized_tensor(
            "encoder.positional_embedding",
            &[1500, 384]
        ));
        assert!(!is_quantized_tensor("encoder.conv1.weight", &[384, 80, 3]));
        assert!(!is_quantized_tensor("encoder.ln_post.weight", &[384]));
    }

    #[test]
    fn quantized_file_keeps_layout_and_marks_ftype() -> Result<(), ModelError> {
        let dir = tempfile::tempdir().map_err(|e| ModelError::io("creating", "tmp", e))?;
        let (f16, q8) = (dir.path().join("m.bin"), dir.path().join("m-q8_0.bin"));
        let hp = small();
        synth_ggml(&hp, &vocab(&hp), &f16, 7)?;
        let report = quantize_ggml(&f16, &q8, QuantType::Q8_0, &mut |_, d, _| {
            quantize_q8_0_reference(d)
        })?;
        let (a, b) = (inspect_ggml(&f16)?, inspect_ggml(&q8)?);
        assert_eq!(b.hparams.ftype, 2007);
        assert_eq!(b.vocab, a.vocab);
        assert_eq!(b.mel_filters, a.mel_filters);
        assert_eq!(a.tensors.len(), b.tensors.len());
        assert_eq!(report.quantized + report.copied, a.tensors.len());
        let mut quantized = 0;
        for (x, y) in a.tensors.iter().zip(&b.tensors) {
            assert_eq!((&x.name, &x.shape), (&y.name, &y.shape));
            if is_quantized_tensor(&x.name, &x.shape) {
                quantized += 1;
                assert_eq!(y.ggml_type, QuantType::Q8_0.ggml_type(), "{}", x.name);
                assert_eq!(y.data_len * 2, x.data_len / 32 * 34, "{}", x.name);
            } else {
                assert_eq!(y.ggml_type, x.ggml_type, "{}", x.name);
                assert_eq!(y.data_len, x.data_len, "{}", x.name);
            }
        }
        assert_eq!(quantized, report.quantized);
        assert!(report.bytes_out < report.bytes_in);
        // Quantizing again is refused with the reason.
        let again = quantize_ggml(
            &q8,
            &dir.path().join("x"),
            QuantType::Q5_0,
            &mut |_, d, _| quantize_q8_0_reference(d),
        );
        assert!(
            matches!(again, Err(ModelError::GgmlFormat { ref reason, .. }) if reason.contains("already quantized"))
        );
        Ok(())
    }

    #[test]
    fn quantized_names_are_made_once_into_the_cache() -> Result<(), Box<dyn std::error::Error>> {
        use crate::{FetchOptions, ModelName, ModelSpec, resolve};
        fn q8(_: QuantType, rows: &[f32], _: usize) -> Vec<u8> {
            quantize_q8_0_reference(rows)
        }
        let dir = tempfile::tempdir()?;
        let hp = small();
        synth_ggml(&hp, &vocab(&hp), &dir.path().join("ggml-tiny.en.bin"), 3)?;
        let spec = ModelSpec::parse("tiny.en-q8_0")?;
        let offline = FetchOptions {
            offline: true,
            cache_dir: Some(dir.path().into()),
            ..Default::default()
        };
        // No quantizer: the cache is all there is, and the error says so.
        let e = resolve(&spec, &offline).err().map(|e| e.to_string());
        assert!(
            e.as_deref().is_some_and(|e| e.contains("no quantizer")),
            "{e:?}"
        );
        let opts = FetchOptions {
            quantizer: Some(q8),
            ..offline
        };
        let made = resolve(&spec, &opts)?;
        assert_eq!(made, dir.path().join("ggml-tiny.en-q8_0.bin"));
        assert_eq!(inspect_ggml(&made)?.hparams.ftype, 2007);
        // Found in the cache the second time (no f16 needed any more).
        std::fs::remove_file(dir.path().join("ggml-tiny.en.bin"))?;
        assert_eq!(resolve(&spec, &opts)?, made);
        // Without the f16 model (offline) a missing quantized model names the f16 sources.
        let e = resolve(
            &ModelSpec::Quantized(ModelName::Base, QuantType::Q5_0),
            &opts,
        );
        assert!(
            matches!(e, Err(ModelError::NotFound { ref model, .. }) if model == "base"),
            "{e:?}"
        );
        Ok(())
    }

    #[test]
    fn wrong_quantizer_output_is_an_error_and_leaves_no_file() -> Result<(), ModelError> {
        let dir = tempfile::tempdir().map_err(|e| ModelError::io("creating", "tmp", e))?;
        let (f16, out) = (dir.path().join("m.bin"), dir.path().join("bad.bin"));
        let hp = small();
        synth_ggml(&hp, &vocab(&hp), &f16, 7)?;
        let r = quantize_ggml(&f16, &out, QuantType::Q5_0, &mut |_, _, _| vec![0; 3]);
        assert!(matches!(r, Err(ModelError::GgmlFormat { .. })));
        assert!(!out.exists());
        Ok(())
    }

    #[test]
    fn q8_0_reference_round_trips_within_a_step() {
        let data: Vec<f32> = (0..64).map(|i| ((i as f32) * 0.37).sin()).collect();
        let q = quantize_q8_0_reference(&data);
        assert_eq!(q.len(), 2 * 34);
        for (b, block) in q.chunks(34).zip(data.chunks(32)) {
            let d = f16_to_f32(u16::from_le_bytes([b[0], b[1]]));
            for (i, &x) in block.iter().enumerate() {
                let y = b[2 + i] as i8 as f32 * d;
                // Half a step, plus the f16 rounding of the scale over up to 127 steps.
                assert!((x - y).abs() <= d * 0.57 + 1e-6, "{x} vs {y}");
            }
        }
    }
}
