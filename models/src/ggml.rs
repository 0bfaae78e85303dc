//! whisper.cpp's ggml model file: writing one (from a CTranslate2 export, or synthetic
//! weights) and reading back its summary.
//!
//! Layout (what whisper.cpp 1.8's `whisper_model_load` reads): u32 magic, 11 i32 hparams,
//! the mel filter bank, the vocabulary, then tensors until the end of the file. See
//! `design/ct2-import.md` for the facts behind each choice.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use crate::ct2::{self, Ct2Model};
use crate::error::ModelError;
use crate::half::f32_to_f16;
use crate::mel::{N_FREQ, mel_filters};

/// ggml's file magic, `"ggml"` as a little-endian u32 (whisper.cpp `GGML_FILE_MAGIC`).
pub const GGML_MAGIC: u32 = 0x6767_6d6c;
/// The `ftype` of a file whose big weights are f16 (whisper.cpp `GGML_FTYPE_MOSTLY_F16`).
pub const FTYPE_F16: i32 = 1;
/// Tensor type codes (ggml `GGML_TYPE_F32`, `GGML_TYPE_F16`).
const TYPE_F32: i32 = 0;
const TYPE_F16: i32 = 1;
/// The smallest `n_vocab` whisper.cpp treats as multilingual (whisper.cpp
/// `whisper_is_multilingual`: `n_vocab >= 51865`).
pub const MULTILINGUAL_MIN_VOCAB: usize = 51865;
/// whisper.cpp's `<|endoftext|>` id: 50256 in English-only models, one more in
/// multilingual ones (whisper.cpp `whisper_vocab::token_eot`).
pub const EOT_ENGLISH: usize = 50256;

/// whisper.cpp's hyperparameters, in file order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Hparams {
    /// Vocabulary size (token embedding rows).
    pub n_vocab: usize,
    /// Encoder positions (1500: 30 s at 50 frames/s after the stride-2 conv).
    pub n_audio_ctx: usize,
    /// Encoder width.
    pub n_audio_state: usize,
    /// Encoder attention heads.
    pub n_audio_head: usize,
    /// Encoder blocks.
    pub n_audio_layer: usize,
    /// Decoder positions (448).
    pub n_text_ctx: usize,
    /// Decoder width.
    pub n_text_state: usize,
    /// Decoder attention heads.
    pub n_text_head: usize,
    /// Decoder blocks.
    pub n_text_layer: usize,
    /// Mel bands (80; 128 for large-v3).
    pub n_mels: usize,
    /// Weight type of the file ([`FTYPE_F16`]).
    pub ftype: i32,
}

impl Hparams {
    /// Whether whisper.cpp will treat the model as multilingual.
    pub fn is_multilingual(&self) -> bool {
        self.n_vocab >= MULTILINGUAL_MIN_VOCAB
    }

    /// The id of `<|endoftext|>` whisper.cpp assumes; the vocabulary written to the file is
    /// every token before it.
    pub fn eot_id(&self) -> usize {
        EOT_ENGLISH + usize::from(self.is_multilingual())
    }

    fn to_i32s(self) -> [i64; 11] {
        [
            self.n_vocab as i64,
            self.n_audio_ctx as i64,
            self.n_audio_state as i64,
            self.n_audio_head as i64,
            self.n_audio_layer as i64,
            self.n_text_ctx as i64,
            self.n_text_state as i64,
            self.n_text_head as i64,
            self.n_text_layer as i64,
            self.n_mels as i64,
            i64::from(self.ftype),
        ]
    }
}

/// How a tensor is stored in the ggml file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum TensorType {
    /// 32-bit float: biases, norms, positional embeddings.
    F32,
    /// binary16: linear and conv weights, the token embedding.
    F16,
}

/// Where a ggml tensor's data comes from in a CTranslate2 model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorSource {
    /// The CTranslate2 variable.
    pub variable: String,
    /// `Some((i, n))`: the variable's rows are split into `n` equal parts and this is part
    /// `i` (the fused q/k/v projections).
    pub rows: Option<(usize, usize)>,
}

/// One tensor of the ggml file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedTensor {
    /// whisper.cpp's name, e.g. `encoder.blocks.0.attn.query.weight`.
    pub name: String,
    /// Shape, outermost first (PyTorch order); written innermost first.
    pub shape: Vec<usize>,
    /// Storage type.
    pub ttype: TensorType,
    /// Its CTranslate2 source.
    pub source: TensorSource,
}

/// Collects the plan; helpers name tensors the way whisper.cpp does.
struct Plan(Vec<PlannedTensor>);

/// A source's row split: part `i` of `n`.
type Rows = Option<(usize, usize)>;

impl Plan {
    fn push(
        &mut self,
        name: String,
        shape: Vec<usize>,
        ttype: TensorType,
        variable: String,
        rows: Rows,
    ) {
        self.0.push(PlannedTensor {
            name,
            shape,
            ttype,
            source: TensorSource { variable, rows },
        });
    }

    /// A linear layer `{g}.{gname}` from `{c}/{cname}`: f16 weight (out x in), f32 bias.
    #[allow(clippy::too_many_arguments)]
    fn linear(
        &mut self,
        g: &str,
        c: &str,
        gname: &str,
        cname: &str,
        rows: Rows,
        bias: bool,
        out: usize,
        inp: usize,
    ) {
        let (gw, cw) = (format!("{g}.{gname}.weight"), format!("{c}/{cname}/weight"));
        self.push(gw, vec![out, inp], TensorType::F16, cw, rows);
        if bias {
            let (gb, cb) = (format!("{g}.{gname}.bias"), format!("{c}/{cname}/bias"));
            self.push(gb, vec![out], TensorType::F32, cb, rows);
        }
    }

    /// A layer norm `{g}.{gname}` from `{c}/{cname}/{gamma,beta}`.
    fn norm(&mut self, g: &str, c: &str, gname: &str, cname: &str, d: usize) {
        self.push(
            format!("{g}.{gname}.weight"),
            vec![d],
            TensorType::F32,
            format!("{c}/{cname}/gamma"),
            None,
        );
        self.push(
            format!("{g}.{gname}.bias"),
            vec![d],
            TensorType::F32,
            format!("{c}/{cname}/beta"),
            None,
        );
    }

    /// One residual block of width `d`; decoder blocks have cross-attention.
    fn block(&mut self, g: &str, c: &str, d: usize, cross: bool) {
        // Self-attention: linear_0 stacks q, k, v by rows. Whisper's key has no bias
        // (CTranslate2 stores zeros there, and a key bias cannot change a softmax anyway).
        self.linear(
            g,
            c,
            "attn.query",
            "self_attention/linear_0",
            Some((0, 3)),
            true,
            d,
            d,
        );
        self.linear(
            g,
            c,
            "attn.key",
            "self_attention/linear_0",
            Some((1, 3)),
            false,
            d,
            d,
        );
        self.linear(
            g,
            c,
            "attn.value",
            "self_attention/linear_0",
            Some((2, 3)),
            true,
            d,
            d,
        );
        self.linear(
            g,
            c,
            "attn.out",
            "self_attention/linear_1",
            None,
            true,
            d,
            d,
        );
        self.norm(g, c, "attn_ln", "self_attention/layer_norm", d);
        if cross {
            // Cross-attention: linear_0 is q, linear_1 stacks k and v, linear_2 is out.
            self.linear(
                g,
                c,
                "cross_attn.query",
                "attention/linear_0",
                None,
                true,
                d,
                d,
            );
            self.linear(
                g,
                c,
                "cross_attn.key",
                "attention/linear_1",
                Some((0, 2)),
                false,
                d,
                d,
            );
            self.linear(
                g,
                c,
                "cross_attn.value",
                "attention/linear_1",
                Some((1, 2)),
                true,
                d,
                d,
            );
            self.linear(
                g,
                c,
                "cross_attn.out",
                "attention/linear_2",
                None,
                true,
                d,
                d,
            );
            self.norm(g, c, "cross_attn_ln", "attention/layer_norm", d);
        }
        self.linear(g, c, "mlp.0", "ffn/linear_0", None, true, 4 * d, d);
        self.linear(g, c, "mlp.2", "ffn/linear_1", None, true, d, 4 * d);
        self.norm(g, c, "mlp_ln", "ffn/layer_norm", d);
    }
}

/// Every tensor whisper.cpp expects for `hp`, with its CTranslate2 source: 7 + 15 per
/// encoder block + 4 + 24 per decoder block (167 for tiny, 245 for base).
pub fn tensor_plan(hp: &Hparams) -> Vec<PlannedTensor> {
    use TensorType::{F16, F32};
    let (a, t) = (hp.n_audio_state, hp.n_text_state);
    let mut p = Plan(Vec::new());
    p.push(
        "encoder.positional_embedding".into(),
        vec![hp.n_audio_ctx, a],
        F32,
        "encoder/position_encodings/encodings".into(),
        None,
    );
    for (c, n_in) in [(1, hp.n_mels), (2, a)] {
        p.push(
            format!("encoder.conv{c}.weight"),
            vec![a, n_in, 3],
            F16,
            format!("encoder/conv{c}/weight"),
            None,
        );
        // Stored as (d, 1) so whisper.cpp can broadcast it over time.
        p.push(
            format!("encoder.conv{c}.bias"),
            vec![a, 1],
            F32,
            format!("encoder/conv{c}/bias"),
            None,
        );
    }
    for i in 0..hp.n_audio_layer {
        p.block(
            &format!("encoder.blocks.{i}"),
            &format!("encoder/layer_{i}"),
            a,
            false,
        );
    }
    p.norm("encoder", "encoder", "ln_post", "layer_norm", a);
    p.push(
        "decoder.positional_embedding".into(),
        vec![hp.n_text_ctx, t],
        F32,
        "decoder/position_encodings/encodings".into(),
        None,
    );
    p.push(
        "decoder.token_embedding.weight".into(),
        vec![hp.n_vocab, t],
        F16,
        "decoder/embeddings/weight".into(),
        None,
    );
    for i in 0..hp.n_text_layer {
        p.block(
            &format!("decoder.blocks.{i}"),
            &format!("decoder/layer_{i}"),
            t,
            true,
        );
    }
    p.norm("decoder", "decoder", "ln", "layer_norm", t);
    p.0
}

/// Writes a ggml file piece by piece, in order.
struct GgmlWriter<W: Write> {
    w: W,
    tensors: usize,
}

impl<W: Write> GgmlWriter<W> {
    fn i32(&mut self, v: i64) -> std::io::Result<()> {
        let v = i32::try_from(v)
            .map_err(|_| std::io::Error::other(format!("{v} does not fit an i32")))?;
        self.w.write_all(&v.to_le_bytes())
    }

    fn header(&mut self, hp: &Hparams, mel: &[f32], vocab: &[Vec<u8>]) -> std::io::Result<()> {
        self.w.write_all(&GGML_MAGIC.to_le_bytes())?;
        for v in hp.to_i32s() {
            self.i32(v)?;
        }
        self.i32(hp.n_mels as i64)?;
        self.i32(N_FREQ as i64)?;
        self.f32s(mel)?;
        self.i32(vocab.len() as i64)?;
        for t in vocab {
            self.w.write_all(&(t.len() as u32).to_le_bytes())?;
            self.w.write_all(t)?;
        }
        Ok(())
    }

    fn f32s(&mut self, data: &[f32]) -> std::io::Result<()> {
        let mut buf = Vec::with_capacity(data.len().min(1 << 20) * 4);
        for chunk in data.chunks(1 << 20) {
            buf.clear();
            buf.extend(chunk.iter().flat_map(|v| v.to_le_bytes()));
            self.w.write_all(&buf)?;
        }
        Ok(())
    }

    fn f16s(&mut self, data: &[u16]) -> std::io::Result<()> {
        let mut buf = Vec::with_capacity(data.len().min(1 << 20) * 2);
        for chunk in data.chunks(1 << 20) {
            buf.clear();
            buf.extend(chunk.iter().flat_map(|v| v.to_le_bytes()));
            self.w.write_all(&buf)?;
        }
        Ok(())
    }

    fn tensor_header(&mut self, t: &PlannedTensor) -> std::io::Result<()> {
        self.i32(t.shape.len() as i64)?;
        self.i32(t.name.len() as i64)?;
        self.i32(match t.ttype {
            TensorType::F32 => i64::from(TYPE_F32),
            TensorType::F16 => i64::from(TYPE_F16),
        })?;
        for &d in t.shape.iter().rev() {
            self.i32(d as i64)?;
        }
        self.w.write_all(t.name.as_bytes())?;
        self.tensors += 1;
        Ok(())
    }
}

/// What [`import_ct2`] produced.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ImportReport {
    /// The file written.
    pub path: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
    /// Hyperparameters, derived from tensor shapes.
    pub hparams: Hparams,
    /// Number of tensors written.
    pub tensors: usize,
    /// Tokens in the CTranslate2 vocabulary (= `n_vocab`).
    pub vocab_size: usize,
    /// Tokens written to the ggml file (those before `<|endoftext|>`).
    pub vocab_written: usize,
    /// Whether whisper.cpp will treat the model as multilingual.
    pub multilingual: bool,
    /// Language tokens listed in `config.json` (0 when absent).
    pub languages: usize,
}

fn model_err(path: &Path, reason: String) -> ModelError {
    ModelError::Ct2Model {
        path: path.to_owned(),
        reason,
    }
}

/// Most encoder or decoder layers accepted: twice large-v3's 32 (openai/whisper
/// `_MODELS` dims), so any real Whisper export fits.
const MAX_LAYERS: usize = 64;

/// Most mel bins accepted: large-v3 uses 128 (the others 80).
const MAX_MELS: usize = 128;

/// Largest `N` + 1 over variables named `{prefix}/layer_N/...`.
fn layer_count<R>(m: &Ct2Model<R>, prefix: &str) -> usize {
    let pat = format!("{prefix}/layer_");
    m.variables()
        .filter_map(|v| {
            v.name
                .strip_prefix(&pat)?
                .split('/')
                .next()?
                .parse::<usize>()
                .ok()
        })
        .map(|n| n + 1)
        .max()
        .unwrap_or(0)
}

/// Derives whisper.cpp's hparams from a CTranslate2 model's shapes and scalars.
///
/// # Errors
/// [`ModelError::Ct2Model`] when a defining variable is missing or has the wrong rank.
pub fn ct2_hparams<R: Read + std::io::Seek>(m: &mut Ct2Model<R>) -> Result<Hparams, ModelError> {
    let path = m.path().to_owned();
    let shape = |m: &Ct2Model<R>, name: &str, rank: usize| -> Result<Vec<usize>, ModelError> {
        let v = m
            .get(name)
            .ok_or_else(|| model_err(&path, format!("missing variable `{name}`")))?;
        if v.shape.len() != rank {
            return Err(model_err(
                &path,
                format!("`{name}` has shape {:?}, expected rank {rank}", v.shape),
            ));
        }
        Ok(v.shape.clone())
    };
    let emb = shape(m, "decoder/embeddings/weight", 2)?;
    let enc_pos = shape(m, "encoder/position_encodings/encodings", 2)?;
    let dec_pos = shape(m, "decoder/position_encodings/encodings", 2)?;
    let conv1 = shape(m, "encoder/conv1/weight", 3)?;
    let head = |m: &mut Ct2Model<R>, name: &str| -> Result<usize, ModelError> {
        let h = m.scalar_int(name)?;
        usize::try_from(h)
            .ok()
            .filter(|&h| h > 0)
            .ok_or_else(|| model_err(&path, format!("`{name}` is {h}")))
    };
    let hp = Hparams {
        n_vocab: emb[0],
        n_audio_ctx: enc_pos[0],
        n_audio_state: enc_pos[1],
        n_audio_head: head(m, "encoder/num_heads")?,
        n_audio_layer: layer_count(m, "encoder"),
        n_text_ctx: dec_pos[0],
        n_text_state: emb[1],
        n_text_head: head(m, "decoder/num_heads")?,
        n_text_layer: layer_count(m, "decoder"),
        n_mels: conv1[1],
        ftype: FTYPE_F16,
    };
    if hp.n_audio_layer == 0 || hp.n_text_layer == 0 {
        return Err(model_err(&path, "no encoder or decoder layers".into()));
    }
    // Layer counts come from variable names and the mel count from a shape that a zero
    // dimension elsewhere leaves unbounded by the file size; unchecked, a tiny file named
    // `decoder/layer_4000000000/...` made the tensor plan (or the mel filters) exhaust memory.
    if hp.n_audio_layer.max(hp.n_text_layer) > MAX_LAYERS || hp.n_mels > MAX_MELS {
        return Err(model_err(
            &path,
            format!(
                "{} encoder and {} decoder layers, {} mel bins: more than a Whisper model has \
                 (at most {MAX_LAYERS} layers, {MAX_MELS} mel bins)",
                hp.n_audio_layer, hp.n_text_layer, hp.n_mels
            ),
        ));
    }
    let widths = [
        hp.n_audio_ctx,
        hp.n_audio_state,
        hp.n_text_ctx,
        hp.n_text_state,
        hp.n_mels,
    ];
    if widths.contains(&0) {
        return Err(model_err(&path, format!("a zero dimension: {hp:?}")));
    }
    if dec_pos[1] != hp.n_text_state || conv1[0] != hp.n_audio_state {
        return Err(model_err(&path, format!("inconsistent widths: {hp:?}")));
    }
    Ok(hp)
}

/// Checks that a tensor's CTranslate2 source has the shape the plan needs.
fn source_shape_ok(t: &PlannedTensor, shape: &[usize]) -> bool {
    let mut want = t.shape.clone();
    if let Some((_, n)) = t.source.rows {
        want[0] *= n;
    }
    // Conv biases are planned as (d, 1) but stored as (d).
    if t.name.starts_with("encoder.conv") && t.name.ends_with(".bias") {
        want.truncate(1);
    }
    want == shape
}

fn rows<T: Copy>(data: Vec<T>, rows: Option<(usize, usize)>) -> Vec<T> {
    match rows {
        None => data,
        Some((i, n)) => {
            let part = data.len() / n;
            data[i * part..(i + 1) * part].to_vec()
        }
    }
}

/// Converts a CTranslate2 (faster-whisper) Whisper export in `ct2_dir` (`model.bin`,
/// `vocabulary.txt` or `.json`, optional `config.json`) to a whisper.cpp ggml file at `out`.
///
/// Big weights are written as f16 and the rest as f32, exactly as whisper.cpp expects;
/// the mel filter bank is computed. The file is written to a temporary file beside `out`
/// and renamed into place, so `out` is either complete or untouched.
///
/// # Errors
/// [`ModelError::Ct2Format`] / [`ModelError::Ct2Model`] for a malformed or incomplete
/// model, [`ModelError::Quantized`] for int8 exports, [`ModelError::Vocabulary`] when the
/// vocabulary is missing or does not fit the model, [`ModelError::Io`] on I/O failure.
pub fn import_ct2(ct2_dir: &Path, out: &Path) -> Result<ImportReport, ModelError> {
    let model_path = ct2_dir.join("model.bin");
    let mut m = Ct2Model::open(&model_path)?;
    if let Some(v) = m.quantized_variable() {
        return Err(ModelError::Quantized {
            path: model_path,
            variable: v.name.clone(),
            dtype: v.dtype.name().to_owned(),
        });
    }
    let hp = ct2_hparams(&mut m)?;
    let config = ct2::read_config(ct2_dir)?;
    let (vocab_path, tokens) = ct2::read_vocabulary(ct2_dir)?;
    let vocab_err = |reason: String| ModelError::Vocabulary {
        path: vocab_path.clone(),
        reason,
    };
    if tokens.len() != hp.n_vocab {
        return Err(vocab_err(format!(
            "{} tokens, but the token embedding has {} rows",
            tokens.len(),
            hp.n_vocab
        )));
    }
    let eot = tokens
        .iter()
        .position(|t| t == "<|endoftext|>")
        .ok_or_else(|| vocab_err("no <|endoftext|> token".into()))?;
    if eot != hp.eot_id() {
        return Err(vocab_err(format!(
            "<|endoftext|> is token {eot}, but whisper.cpp expects {} for n_vocab {}",
            hp.eot_id(),
            hp.n_vocab
        )));
    }
    let vocab = ct2::decode_tokens(&tokens[..eot]).map_err(vocab_err)?;

    let plan = tensor_plan(&hp);
    for t in &plan {
        let v = m.get(&t.source.variable).ok_or_else(|| {
            model_err(
                &model_path,
                format!("missing variable `{}` (for {})", t.source.variable, t.name),
            )
        })?;
        if !source_shape_ok(t, &v.shape) {
            return Err(model_err(
                &model_path,
                format!(
                    "`{}` has shape {:?}; {} needs {:?}",
                    v.name, v.shape, t.name, t.shape
                ),
            ));
        }
    }

    let tensors = write_atomically(out, |w| {
        let mut g = GgmlWriter { w, tensors: 0 };
        g.header(&hp, &mel_filters(hp.n_mels), &vocab)
            .map_err(|e| ModelError::io("writing", out, e))?;
        for t in &plan {
            g.tensor_header(t)
                .map_err(|e| ModelError::io("writing", out, e))?;
            let written = match t.ttype {
                TensorType::F16 => {
                    let (_, d) = m.read_f16(&t.source.variable)?;
                    g.f16s(&rows(d, t.source.rows))
                }
                TensorType::F32 => {
                    let (_, d) = m.read_f32(&t.source.variable)?;
                    g.f32s(&rows(d, t.source.rows))
                }
            };
            written.map_err(|e| ModelError::io("writing", out, e))?;
        }
        Ok(g.tensors)
    })?;
    let bytes = std::fs::metadata(out)
        .map_err(|e| ModelError::io("reading", out, e))?
        .len();
    Ok(ImportReport {
        path: out.to_owned(),
        bytes,
        hparams: hp,
        tensors,
        vocab_size: tokens.len(),
        vocab_written: vocab.len(),
        multilingual: hp.is_multilingual(),
        languages: config.map_or(0, |c| c.lang_ids.len()),
    })
}

/// Runs `body` on a buffered temporary file beside `out`, then renames it to `out`.
/// On any error the temporary file is removed and `out` is untouched.
pub(crate) fn write_atomically<T>(
    out: &Path,
    body: impl FnOnce(&mut BufWriter<&File>) -> Result<T, ModelError>,
) -> Result<T, ModelError> {
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).map_err(|e| ModelError::io("creating", &dir, e))?;
    let tmp = tempfile::Builder::new()
        .prefix(".import-")
        .suffix(".partial")
        .tempfile_in(&dir)
        .map_err(|e| ModelError::io("creating a temporary file in", &dir, e))?;
    let value = {
        let mut w = BufWriter::with_capacity(1 << 20, tmp.as_file());
        let value = body(&mut w)?;
        w.flush()
            .map_err(|e| ModelError::io("writing", tmp.path(), e))?;
        value
    };
    tmp.as_file()
        .sync_all()
        .map_err(|e| ModelError::io("syncing", tmp.path(), e))?;
    // Temporary files are private (0600); a model file is not.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::Permissions::from_mode(0o644);
        tmp.as_file()
            .set_permissions(mode)
            .map_err(|e| ModelError::io("setting permissions of", tmp.path(), e))?;
    }
    tmp.persist(out)
        .map_err(|e| ModelError::io("renaming into", out, e.error))?;
    Ok(value)
}

/// The size in bytes of the f16 ggml file for `hp` with `vocab`, without writing it.
pub fn ggml_file_size(hp: &Hparams, vocab: &[Vec<u8>]) -> u64 {
    let header = 4 + 11 * 4;
    let mel = 8 + (hp.n_mels * N_FREQ * 4) as u64;
    let vocab_bytes: u64 = 4 + vocab.iter().map(|t| 4 + t.len() as u64).sum::<u64>();
    let tensors: u64 = tensor_plan(hp)
        .iter()
        .map(|t| {
            let n: usize = t.shape.iter().product();
            let elem = match t.ttype {
                TensorType::F32 => 4,
                TensorType::F16 => 2,
            };
            (12 + 4 * t.shape.len() + t.name.len() + n * elem) as u64
        })
        .sum();
    header + mel + vocab_bytes + tensors
}

/// A small deterministic generator (xorshift64*) for synthetic weights.
struct XorShift(u64);

impl XorShift {
    /// Uniform in [-1, 1).
    fn next_unit(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d);
        ((x >> 40) as f32 / (1u64 << 23) as f32) - 1.0
    }
}

/// Writes a ggml file with `hp`'s exact shapes and types and random weights (for timing
/// models that cannot be downloaded; it transcribes nothing meaningful).
///
/// Linear and conv weights are uniform in ±1/sqrt(fan-in), layer norms are identity,
/// biases zero, positional embeddings small. `vocab` is written as the vocabulary (pass a
/// real one, e.g. [`inspect_ggml`]`(base).vocab`, for readable output); it must have
/// [`Hparams::eot_id`] tokens. Written atomically like [`import_ct2`]. Returns the file size.
///
/// # Errors
/// [`ModelError::Vocabulary`] for a vocabulary of the wrong length, [`ModelError::Io`] on
/// write failure.
pub fn synth_ggml(
    hp: &Hparams,
    vocab: &[Vec<u8>],
    out: &Path,
    seed: u64,
) -> Result<u64, ModelError> {
    if vocab.len() != hp.eot_id() {
        return Err(ModelError::Vocabulary {
            path: out.to_owned(),
            reason: format!(
                "{} tokens given, whisper.cpp expects {} for n_vocab {}",
                vocab.len(),
                hp.eot_id(),
                hp.n_vocab
            ),
        });
    }
    let mut rng = XorShift(seed | 1);
    write_atomically(out, |w| {
        let io = |e| ModelError::io("writing", out, e);
        let mut g = GgmlWriter { w, tensors: 0 };
        g.header(hp, &mel_filters(hp.n_mels), vocab).map_err(io)?;
        for t in tensor_plan(hp) {
            g.tensor_header(&t).map_err(io)?;
            let n: usize = t.shape.iter().product();
            let fan_in: usize = t.shape[1..].iter().product::<usize>().max(1);
            let scale = 1.0 / (fan_in as f32).sqrt();
            let is_norm = t.shape.len() == 1 && t.source.variable.ends_with("/gamma");
            let value = |rng: &mut XorShift| -> f32 {
                if is_norm {
                    1.0
                } else if t.name.ends_with(".bias") {
                    0.0
                } else if t.name.ends_with("positional_embedding") {
                    0.02 * rng.next_unit()
                } else {
                    scale * rng.next_unit()
                }
            };
            // In slices, so memory stays small even for large-v3's token embedding.
            let mut left = n;
            while left > 0 {
                let k = left.min(1 << 20);
                match t.ttype {
                    TensorType::F32 => {
                        let v: Vec<f32> = (0..k).map(|_| value(&mut rng)).collect();
                        g.f32s(&v).map_err(io)?;
                    }
                    TensorType::F16 => {
                        let v: Vec<u16> = (0..k).map(|_| f32_to_f16(value(&mut rng))).collect();
                        g.f16s(&v).map_err(io)?;
                    }
                }
                left -= k;
            }
        }
        Ok(())
    })?;
    Ok(std::fs::metadata(out)
        .map_err(|e| ModelError::io("reading", out, e))?
        .len())
}

/// A tensor as listed in a ggml file.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct GgmlTensorInfo {
    /// Its name.
    pub name: String,
    /// Shape, outermost first (PyTorch order).
    pub shape: Vec<usize>,
    /// ggml type code (0 f32, 1 f16, others quantized).
    pub ggml_type: i32,
    /// Byte offset of its data in the file.
    pub data_offset: u64,
    /// Byte length of its data.
    pub data_len: u64,
}

/// What [`inspect_ggml`] reads from a ggml file.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct GgmlSummary {
    /// Hyperparameters.
    pub hparams: Hparams,
    /// The mel filter bank (n_mels x 201, row-major).
    #[serde(skip)]
    pub mel_filters: Vec<f32>,
    /// The vocabulary's tokens as bytes.
    #[serde(skip)]
    pub vocab: Vec<Vec<u8>>,
    /// Tensors in file order.
    pub tensors: Vec<GgmlTensorInfo>,
    /// File size in bytes.
    pub bytes: u64,
}

/// A counting reader over a ggml file, for error offsets.
struct GgmlCursor<'a> {
    r: BufReader<File>,
    pos: u64,
    len: u64,
    path: &'a Path,
}

impl GgmlCursor<'_> {
    fn err(&self, reason: String) -> ModelError {
        ModelError::GgmlFormat {
            path: self.path.to_owned(),
            offset: self.pos,
            reason,
        }
    }

    fn bytes(&mut self, n: usize) -> Result<Vec<u8>, ModelError> {
        if self.pos + n as u64 > self.len {
            return Err(self.err(format!("truncated ({n} bytes needed)")));
        }
        let mut b = vec![0; n];
        self.r
            .read_exact(&mut b)
            .map_err(|e| self.err(e.to_string()))?;
        self.pos += n as u64;
        Ok(b)
    }

    fn skip(&mut self, n: u64, what: &str) -> Result<(), ModelError> {
        if self.pos + n > self.len {
            return Err(self.err(format!("truncated in {what}")));
        }
        self.r
            .seek_relative(n as i64)
            .map_err(|e| self.err(e.to_string()))?;
        self.pos += n;
        Ok(())
    }

    fn i32(&mut self) -> Result<i32, ModelError> {
        let b = self.bytes(4)?;
        Ok(i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn usize(&mut self, what: &str) -> Result<usize, ModelError> {
        let v = self.i32()?;
        usize::try_from(v).map_err(|_| self.err(format!("negative {what}: {v}")))
    }
}

/// Most dimensions of a ggml tensor (`GGML_MAX_DIMS`).
pub const MAX_DIMS: usize = 4;

/// Reads a ggml file's hparams, mel filters, vocabulary and tensor list (skipping data),
/// checking that every count, dimension and length fits in the file. Knows the sizes of
/// f32, f16, bf16, the q4_0/q4_1/q5_0/q5_1/q8_0 and the q2_K..q6_K quantized types. The
/// engine runs it before whisper.cpp sees a file, so a truncated or malformed file is
/// refused with a clear error instead of reaching whisper.cpp's loader.
///
/// # Errors
/// [`ModelError::GgmlFormat`] when the file is not a well-formed whisper ggml file.
pub fn inspect_ggml(path: &Path) -> Result<GgmlSummary, ModelError> {
    let file = File::open(path).map_err(|e| ModelError::io("opening", path, e))?;
    let len = file
        .metadata()
        .map_err(|e| ModelError::io("reading", path, e))?
        .len();
    let mut c = GgmlCursor {
        r: BufReader::with_capacity(1 << 16, file),
        pos: 0,
        len,
        path,
    };
    let magic = c.i32()? as u32;
    if magic != GGML_MAGIC {
        return Err(ModelError::GgmlFormat {
            path: path.to_owned(),
            offset: 0,
            reason: format!("bad magic {magic:#010x}"),
        });
    }
    let mut h = [0usize; 10];
    for v in h.iter_mut() {
        *v = c.usize("hparam")?;
    }
    let ftype = c.i32()?;
    let hparams = Hparams {
        n_vocab: h[0],
        n_audio_ctx: h[1],
        n_audio_state: h[2],
        n_audio_head: h[3],
        n_audio_layer: h[4],
        n_text_ctx: h[5],
        n_text_state: h[6],
        n_text_head: h[7],
        n_text_layer: h[8],
        n_mels: h[9],
        ftype,
    };
    let n_mel = c.usize("mel rows")?;
    let n_fft = c.usize("mel columns")?;
    let mel_bytes = n_mel
        .checked_mul(n_fft)
        .and_then(|n| n.checked_mul(4))
        .ok_or_else(|| c.err(format!("mel filters of {n_mel} x {n_fft} overflow")))?;
    let mel = c.bytes(mel_bytes)?;
    let mel_filters = mel
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let n_tokens = c.usize("vocabulary size")?;
    let mut vocab = Vec::with_capacity(n_tokens.min(1 << 20));
    for _ in 0..n_tokens {
        let n = c.usize("token length")?;
        vocab.push(c.bytes(n)?);
    }
    let mut tensors = Vec::new();
    while c.pos < c.len {
        let n_dims = c.usize("n_dims")?;
        // whisper.cpp reads the dimensions into an array of 4 (a larger count overflowed
        // its stack before upstream #3957).
        if !(1..=MAX_DIMS).contains(&n_dims) {
            return Err(c.err(format!("tensor with {n_dims} dimensions (1 to {MAX_DIMS})")));
        }
        let name_len = c.usize("name length")?;
        let ggml_type = c.i32()?;
        let mut shape = Vec::with_capacity(n_dims);
        for _ in 0..n_dims {
            shape.push(c.usize("dimension")?);
        }
        shape.reverse();
        let name = String::from_utf8(c.bytes(name_len)?)
            .map_err(|_| c.err("tensor name is not UTF-8".into()))?;
        let n = shape
            .iter()
            .try_fold(1usize, |n, d| n.checked_mul(*d))
            .ok_or_else(|| c.err(format!("tensor `{name}` has too many elements")))?;
        // (elements, bytes) per block of each ggml type (ggml `type_traits`).
        let (be, bb) = match ggml_type {
            0 => (1, 4),
            1 => (1, 2),
            2 => (32, 18),   // q4_0
            3 => (32, 20),   // q4_1
            6 => (32, 22),   // q5_0
            7 => (32, 24),   // q5_1
            8 => (32, 34),   // q8_0
            10 => (256, 84), // q2_K
            11 => (256, 110),
            12 => (256, 144),
            13 => (256, 176),
            14 => (256, 210), // q6_K
            30 => (1, 2),     // bf16
            t => return Err(c.err(format!("tensor `{name}` has unsupported type {t}"))),
        };
        if n % be != 0 {
            return Err(c.err(format!(
                "tensor `{name}` has {n} elements, not whole blocks of {be}"
            )));
        }
        let (data_offset, data_len) = (c.pos, (n / be * bb) as u64);
        c.skip(data_len, &format!("tensor `{name}`"))?;
        tensors.push(GgmlTensorInfo {
            name,
            shape,
            ggml_type,
            data_offset,
            data_len,
        });
    }
    Ok(GgmlSummary {
        hparams,
        mel_filters,
        vocab,
        tensors,
        bytes: len,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ct2::tests::Ct2Builder;

    /// Small shapes: width 4, 2 heads, 1 encoder and 2 decoder blocks, 80 mels.
    fn small_hparams(n_vocab: usize) -> Hparams {
        Hparams {
            n_vocab,
            n_audio_ctx: 6,
            n_audio_state: 4,
            n_audio_head: 2,
            n_audio_layer: 1,
            n_text_ctx: 5,
            n_text_state: 4,
            n_text_head: 2,
            n_text_layer: 2,
            n_mels: 80,
            ftype: FTYPE_F16,
        }
    }

    /// A CTranslate2 model with every variable the plan for `hp` reads, each filled with
    /// `k + 0.001 * (i % 512)` for the k-th variable.
    fn synthetic_model(hp: &Hparams) -> Ct2Builder {
        let mut b = Ct2Builder::default();
        let mut seen = std::collections::BTreeSet::new();
        for t in tensor_plan(hp) {
            if !seen.insert(t.source.variable.clone()) {
                continue;
            }
            let mut shape: Vec<u32> = t.shape.iter().map(|&d| d as u32).collect();
            if let Some((_, n)) = t.source.rows {
                shape[0] *= n as u32;
            }
            if t.name.starts_with("encoder.conv") && t.name.ends_with(".bias") {
                shape.truncate(1);
            }
            b.f16(&t.source.variable, &shape, seen.len() as f32);
        }
        b.i16_scalar("encoder/num_heads", 2)
            .i16_scalar("decoder/num_heads", 2);
        b.alias("decoder/projection/weight", "decoder/embeddings/weight");
        b
    }

    /// A vocabulary.txt: byte-level tokens, then specials from `eot`.
    fn vocabulary(n: usize, eot: usize, empty: Option<usize>) -> String {
        (0..n)
            .map(|i| match i {
                _ if Some(i) == empty => "\n".to_string(),
                _ if i == eot => "<|endoftext|>\n".to_string(),
                _ if i > eot => format!("<|x{i}|>\n"),
                220 => "Ġ\n".to_string(),
                _ => format!("a{i}\n"),
            })
            .collect()
    }

    fn write_dir(model: &Ct2Builder, vocab: &str) -> Result<tempfile::TempDir, std::io::Error> {
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join("model.bin"), model.bytes())?;
        std::fs::write(dir.path().join("vocabulary.txt"), vocab)?;
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"lang_ids": [], "suppress_ids": [1, 2]}"#,
        )?;
        Ok(dir)
    }

    fn tensor_f16(path: &Path, t: &GgmlTensorInfo) -> Result<Vec<u16>, std::io::Error> {
        let b = std::fs::read(path)?;
        let d = &b[t.data_offset as usize..(t.data_offset + t.data_len) as usize];
        Ok(d.chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect())
    }

    #[test]
    fn synthetic_file_has_the_import_layout() -> Result<(), Box<dyn std::error::Error>> {
        let hp = small_hparams(51865);
        let dir = write_dir(
            &synthetic_model(&hp),
            &vocabulary(51865, 50257, Some(50256)),
        )?;
        let imported = dir.path().join("imported.bin");
        let report = import_ct2(dir.path(), &imported)?;
        let vocab = inspect_ggml(&imported)?.vocab;
        let synth = dir.path().join("synth.bin");
        let bytes = synth_ggml(&hp, &vocab, &synth, 7)?;
        assert_eq!(bytes, report.bytes);
        assert_eq!(ggml_file_size(&hp, &vocab), bytes);
        let (a, b) = (inspect_ggml(&imported)?, inspect_ggml(&synth)?);
        assert_eq!(a.tensors, b.tensors);
        assert_eq!((a.hparams, a.vocab), (b.hparams, b.vocab));
        let e = synth_ggml(&hp, &vocab[..10], &synth, 7)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("expects 50257"), "{e}");
        let mut rng = XorShift(3);
        assert!(
            (0..10_000)
                .map(|_| rng.next_unit())
                .all(|x| (-1.0..1.0).contains(&x))
        );
        Ok(())
    }

    #[test]
    fn plan_counts_match_whisper_cpp() {
        let tiny = Hparams {
            n_audio_layer: 4,
            n_text_layer: 4,
            ..small_hparams(51864)
        };
        assert_eq!(tensor_plan(&tiny).len(), 167);
        let base = Hparams {
            n_audio_layer: 6,
            n_text_layer: 6,
            ..small_hparams(51865)
        };
        assert_eq!(tensor_plan(&base).len(), 245);
        let names: std::collections::BTreeSet<_> =
            tensor_plan(&tiny).into_iter().map(|t| t.name).collect();
        assert_eq!(names.len(), 167, "names are unique");
        assert!(!names.iter().any(|n| n.contains("key.bias")));
    }

    #[test]
    fn imports_a_synthetic_english_model() -> Result<(), Box<dyn std::error::Error>> {
        let hp = small_hparams(51864);
        let dir = write_dir(&synthetic_model(&hp), &vocabulary(51864, 50256, None))?;
        let out = dir.path().join("out/ggml-test.bin");
        let report = import_ct2(dir.path(), &out)?;
        assert_eq!(report.hparams, hp);
        assert_eq!(
            (report.tensors, report.vocab_size, report.vocab_written),
            (7 + 15 + 4 + 2 * 24, 51864, 50256)
        );
        assert!(!report.multilingual);

        let s = inspect_ggml(&out)?;
        assert_eq!(s.hparams, hp);
        assert_eq!(s.bytes, report.bytes);
        assert_eq!(s.mel_filters, mel_filters(80));
        assert_eq!(s.vocab.len(), 50256);
        assert_eq!(s.vocab[220], b" ");
        assert_eq!(s.vocab[7], b"a7");
        let plan = tensor_plan(&hp);
        assert_eq!(
            s.tensors.iter().map(|t| &t.name).collect::<Vec<_>>(),
            plan.iter().map(|t| &t.name).collect::<Vec<_>>()
        );
        let get = |name: &str| {
            s.tensors
                .iter()
                .find(|t| t.name == name)
                .ok_or(format!("no {name}"))
        };
        // Types and shapes whisper.cpp checks.
        for (name, ty, shape) in [
            ("encoder.conv1.weight", 1, vec![4, 80, 3]),
            ("encoder.conv1.bias", 0, vec![4, 1]),
            ("encoder.positional_embedding", 0, vec![6, 4]),
            ("decoder.positional_embedding", 0, vec![5, 4]),
            ("decoder.token_embedding.weight", 1, vec![51864, 4]),
            ("decoder.blocks.1.cross_attn.key.weight", 1, vec![4, 4]),
            ("decoder.blocks.1.mlp.0.weight", 1, vec![16, 4]),
            ("decoder.blocks.1.mlp.0.bias", 0, vec![16]),
            ("encoder.blocks.0.attn_ln.weight", 0, vec![4]),
        ] {
            let t = get(name)?;
            assert_eq!((t.ggml_type, &t.shape), (ty, &shape), "{name}");
        }
        // q, k, v are consecutive row blocks of linear_0.
        let k = plan
            .iter()
            .position(|t| t.name == "encoder.blocks.0.attn.query.weight")
            .ok_or("plan")?;
        let var_index = |var: &str| {
            let mut seen = Vec::<String>::new();
            for t in &plan {
                if !seen.contains(&t.source.variable) {
                    seen.push(t.source.variable.clone());
                }
            }
            seen.iter().position(|v| v == var).map(|i| (i + 1) as f32)
        };
        let base = var_index(&plan[k].source.variable).ok_or("var")?;
        let expect = |from: usize| {
            (from..from + 16)
                .map(|i| f32_to_f16(base + i as f32 * 0.001))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            tensor_f16(&out, get("encoder.blocks.0.attn.query.weight")?)?,
            expect(0)
        );
        assert_eq!(
            tensor_f16(&out, get("encoder.blocks.0.attn.key.weight")?)?,
            expect(16)
        );
        assert_eq!(
            tensor_f16(&out, get("encoder.blocks.0.attn.value.weight")?)?,
            expect(32)
        );
        // No temporary files left beside the output.
        assert_eq!(std::fs::read_dir(dir.path().join("out"))?.count(), 1);
        Ok(())
    }

    /// Malformed files are refused by the structural check before whisper.cpp sees them:
    /// a tensor with more than 4 dimensions, and a file cut anywhere.
    #[test]
    fn malformed_and_truncated_files_are_refused() -> Result<(), Box<dyn std::error::Error>> {
        let hp = small_hparams(51865);
        let dir = write_dir(
            &synthetic_model(&hp),
            &vocabulary(51865, 50257, Some(50256)),
        )?;
        let good = dir.path().join("good.bin");
        import_ct2(dir.path(), &good)?;
        let summary = inspect_ggml(&good)?;
        let bytes = std::fs::read(&good)?;
        // The first tensor's header: n_dims, name length, type, dims, name.
        let first = &summary.tensors[0];
        let header = 12 + 4 * first.shape.len() + first.name.len();
        let at = usize::try_from(first.data_offset)? - header;
        let mut bad = bytes.clone();
        bad[at..at + 4].copy_from_slice(&5i32.to_le_bytes());
        let path = dir.path().join("five_dims.bin");
        std::fs::write(&path, &bad)?;
        let e = inspect_ggml(&path)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("5 dimensions"), "{e}");
        for cut in [3, 40, bytes.len() / 3, bytes.len() - 1] {
            let path = dir.path().join(format!("cut_{cut}.bin"));
            std::fs::write(&path, &bytes[..cut])?;
            assert!(inspect_ggml(&path).is_err(), "a file cut at {cut} passed");
        }
        Ok(())
    }

    #[test]
    fn multilingual_vocabulary_keeps_the_empty_token() -> Result<(), Box<dyn std::error::Error>> {
        let hp = small_hparams(51865);
        let dir = write_dir(
            &synthetic_model(&hp),
            &vocabulary(51865, 50257, Some(50256)),
        )?;
        let out = dir.path().join("m.bin");
        let report = import_ct2(dir.path(), &out)?;
        assert!(report.multilingual);
        assert_eq!(report.vocab_written, 50257);
        let s = inspect_ggml(&out)?;
        assert_eq!(s.vocab.len(), 50257);
        assert!(s.vocab[50256].is_empty());
        assert_eq!(s.vocab[50255], b"a50255");
        Ok(())
    }

    #[test]
    fn special_token_boundary_must_match_whisper_cpp() -> Result<(), Box<dyn std::error::Error>> {
        // An English-size vocabulary whose <|endoftext|> sits one id late, as if an empty
        // line had been inserted: every later id would be wrong.
        let hp = small_hparams(51864);
        let dir = write_dir(
            &synthetic_model(&hp),
            &vocabulary(51864, 50257, Some(50256)),
        )?;
        let e = import_ct2(dir.path(), &dir.path().join("x.bin"))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.contains("<|endoftext|> is token 50257, but whisper.cpp expects 50256"),
            "{e}"
        );
        // A vocabulary that lost a line does not fit the embedding.
        let dir = write_dir(&synthetic_model(&hp), &vocabulary(51863, 50256, None))?;
        let e = import_ct2(dir.path(), &dir.path().join("x.bin"))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.contains("51863 tokens, but the token embedding has 51864 rows"),
            "{e}"
        );
        assert!(!dir.path().join("x.bin").exists());
        Ok(())
    }

    #[test]
    fn int8_and_truncated_models_leave_the_output_untouched()
    -> Result<(), Box<dyn std::error::Error>> {
        let hp = small_hparams(51864);
        let vocab = vocabulary(51864, 50256, None);
        let mut model = synthetic_model(&hp);
        model.raw(
            "encoder/layer_0/ffn/linear_0/weight_int8",
            &[16, 4],
            1,
            vec![0; 64],
        );
        let dir = write_dir(&model, &vocab)?;
        let out = dir.path().join("keep.bin");
        std::fs::write(&out, b"previous")?;
        let e = import_ct2(dir.path(), &out);
        assert!(matches!(e, Err(ModelError::Quantized { .. })), "{e:?}");

        let bytes = synthetic_model(&hp).bytes();
        std::fs::write(dir.path().join("model.bin"), &bytes[..bytes.len() - 100])?;
        let e = import_ct2(dir.path(), &out);
        assert!(matches!(e, Err(ModelError::Ct2Format { .. })), "{e:?}");
        assert_eq!(std::fs::read(&out)?, b"previous");
        Ok(())
    }

    /// Found by the `ct2_import` fuzz seeds: a one-byte scalar named
    /// `decoder/layer_4000000000/x` made the tensor plan allocate billions of entries, and a
    /// zero-width encoder let `n_mels` be any size.
    #[test]
    fn absurd_layer_counts_and_widths_are_errors() -> Result<(), Box<dyn std::error::Error>> {
        let hp = small_hparams(51864);
        let vocab = vocabulary(51864, 50256, None);
        let mut deep = synthetic_model(&hp);
        deep.raw("decoder/layer_4000000000/x", &[], 1, vec![1]);
        let mut zero = Ct2Builder::default();
        zero.raw("decoder/embeddings/weight", &[8, 0], 4, vec![])
            .raw("encoder/position_encodings/encodings", &[6, 0], 0, vec![])
            .raw("decoder/position_encodings/encodings", &[5, 0], 0, vec![])
            .raw("encoder/conv1/weight", &[0, 4_000_000_000, 3], 4, vec![])
            .raw("encoder/layer_0/x", &[], 1, vec![1])
            .raw("decoder/layer_0/x", &[], 1, vec![1])
            .i16_scalar("encoder/num_heads", 2)
            .i16_scalar("decoder/num_heads", 2);
        for (model, want) in [(deep, "4000000001 decoder layers"), (zero, "mel bins")] {
            let dir = write_dir(&model, &vocab)?;
            let e = import_ct2(dir.path(), &dir.path().join("x.bin"))
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(e.contains(want), "{e}");
        }
        Ok(())
    }
}
