//! Reading a CTranslate2 (faster-whisper) Whisper export: `model.bin`, the vocabulary and
//! `config.json`.
//!
//! `model.bin` is indexed once (names, shapes, types, offsets); tensor data is read on
//! demand, so memory stays at one tensor even for large models. Format facts are in
//! `design/ct2-import.md`.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::error::ModelError;
use crate::half::{bf16_to_f32, f16_to_f32, f32_to_f16};

/// The `model.bin` binary version this reader understands (CTranslate2 3.x/4.x write 6).
pub const SUPPORTED_BINARY_VERSION: u32 = 6;
/// The spec name of Whisper models.
pub const WHISPER_SPEC: &str = "WhisperSpec";

/// Element type of a CTranslate2 variable (the `u8` code stored in `model.bin`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DType {
    /// 32-bit float (code 0).
    F32,
    /// 8-bit integer (code 1): scalars, or int8-quantized weights.
    I8,
    /// 16-bit integer (code 2): scalars, or int16-quantized weights.
    I16,
    /// 32-bit integer (code 3).
    I32,
    /// IEEE binary16 (code 4).
    F16,
    /// bfloat16 (code 5).
    BF16,
}

impl DType {
    fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0 => Self::F32,
            1 => Self::I8,
            2 => Self::I16,
            3 => Self::I32,
            4 => Self::F16,
            5 => Self::BF16,
            _ => return None,
        })
    }

    /// The code stored in `model.bin`.
    pub fn code(self) -> u8 {
        match self {
            Self::F32 => 0,
            Self::I8 => 1,
            Self::I16 => 2,
            Self::I32 => 3,
            Self::F16 => 4,
            Self::BF16 => 5,
        }
    }

    /// Bytes per element.
    pub fn size(self) -> u64 {
        match self {
            Self::I8 => 1,
            Self::I16 | Self::F16 | Self::BF16 => 2,
            Self::F32 | Self::I32 => 4,
        }
    }

    /// Whether this is a floating-point type the importer can convert.
    pub fn is_float(self) -> bool {
        matches!(self, Self::F32 | Self::F16 | Self::BF16)
    }

    /// CTranslate2's name for the type.
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "float32",
            Self::I8 => "int8",
            Self::I16 => "int16",
            Self::I32 => "int32",
            Self::F16 => "float16",
            Self::BF16 => "bfloat16",
        }
    }
}

/// One variable of `model.bin`: where its data lies and how to read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Variable {
    /// Its name, e.g. `encoder/layer_0/self_attention/linear_0/weight`.
    pub name: String,
    /// Dimensions, outermost first (PyTorch order). Empty for scalars.
    pub shape: Vec<usize>,
    /// Element type.
    pub dtype: DType,
    /// Byte offset of the data in the file.
    pub offset: u64,
    /// Byte length of the data.
    pub byte_len: u64,
}

impl Variable {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Whether the variable has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// An indexed CTranslate2 `model.bin`.
#[derive(Debug)]
pub struct Ct2Model<R> {
    reader: R,
    path: PathBuf,
    /// The binary version in the header.
    pub binary_version: u32,
    /// The spec name (`WhisperSpec`).
    pub spec: String,
    /// The spec revision.
    pub spec_revision: u32,
    variables: BTreeMap<String, Variable>,
    aliases: BTreeMap<String, String>,
}

impl Ct2Model<BufReader<File>> {
    /// Opens and indexes `path`.
    ///
    /// # Errors
    /// [`ModelError::Io`] when it cannot be read, [`ModelError::Ct2Format`] when it is not a
    /// well-formed version-6 `model.bin` (including truncation).
    pub fn open(path: &Path) -> Result<Self, ModelError> {
        let file = File::open(path).map_err(|e| ModelError::io("opening", path, e))?;
        Self::from_reader(BufReader::with_capacity(1 << 20, file), path)
    }
}

/// A cursor over the header that knows where it is, for error messages.
struct Parser<'a, R> {
    r: &'a mut R,
    pos: u64,
    len: u64,
    path: &'a Path,
}

impl<R: Read + Seek> Parser<'_, R> {
    fn err(&self, reason: impl Into<String>) -> ModelError {
        ModelError::Ct2Format {
            path: self.path.to_owned(),
            offset: self.pos,
            reason: reason.into(),
        }
    }

    fn bytes(&mut self, n: usize, what: &str) -> Result<Vec<u8>, ModelError> {
        if self.pos + n as u64 > self.len {
            return Err(self.err(format!("truncated: {what} needs {n} bytes")));
        }
        let mut buf = vec![0; n];
        self.r
            .read_exact(&mut buf)
            .map_err(|e| self.err(format!("reading {what}: {e}")))?;
        self.pos += n as u64;
        Ok(buf)
    }

    fn u8(&mut self, what: &str) -> Result<u8, ModelError> {
        Ok(self.bytes(1, what)?[0])
    }

    fn u16(&mut self, what: &str) -> Result<u16, ModelError> {
        let b = self.bytes(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self, what: &str) -> Result<u32, ModelError> {
        let b = self.bytes(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A u16 length that counts a trailing NUL, the bytes, the NUL.
    fn string(&mut self, what: &str) -> Result<String, ModelError> {
        let n = self.u16(what)? as usize;
        let mut b = self.bytes(n, what)?;
        if b.pop() != Some(0) {
            return Err(self.err(format!("{what} is not NUL-terminated")));
        }
        String::from_utf8(b).map_err(|_| self.err(format!("{what} is not UTF-8")))
    }

    fn skip(&mut self, n: u64, what: &str) -> Result<(), ModelError> {
        if self.pos + n > self.len {
            return Err(self.err(format!(
                "truncated: {what} needs {n} bytes, {} left",
                self.len - self.pos
            )));
        }
        self.r
            .seek(SeekFrom::Current(n as i64))
            .map_err(|e| self.err(format!("seeking past {what}: {e}")))?;
        self.pos += n;
        Ok(())
    }
}

impl<R> Ct2Model<R> {
    /// The file this model was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// All variables (not aliases), by name.
    pub fn variables(&self) -> impl Iterator<Item = &Variable> {
        self.variables.values()
    }

    /// Aliases as (alias, target) pairs.
    pub fn aliases(&self) -> impl Iterator<Item = (&str, &str)> {
        self.aliases.iter().map(|(a, t)| (a.as_str(), t.as_str()))
    }

    /// The variable called `name`, following an alias.
    pub fn get(&self, name: &str) -> Option<&Variable> {
        let name = self.aliases.get(name).map_or(name, String::as_str);
        self.variables.get(name)
    }

    fn require(&self, name: &str) -> Result<&Variable, ModelError> {
        self.get(name).ok_or_else(|| ModelError::Ct2Model {
            path: self.path.clone(),
            reason: format!("missing variable `{name}`"),
        })
    }

    /// The first variable that shows the model is quantized: an integer tensor of rank >= 1
    /// or an int8 `*_scale`, or `None` for a float export.
    pub fn quantized_variable(&self) -> Option<&Variable> {
        self.variables
            .values()
            .find(|v| (!v.shape.is_empty() && !v.dtype.is_float()) || v.name.ends_with("_scale"))
    }
}

impl<R: Read + Seek> Ct2Model<R> {
    /// Indexes a `model.bin` read from `reader`; `path` names it in errors.
    ///
    /// # Errors
    /// [`ModelError::Ct2Format`] when it is malformed or truncated.
    pub fn from_reader(mut reader: R, path: &Path) -> Result<Self, ModelError> {
        let len = reader
            .seek(SeekFrom::End(0))
            .and_then(|l| reader.seek(SeekFrom::Start(0)).map(|_| l))
            .map_err(|e| ModelError::io("reading", path, e))?;
        let mut p = Parser {
            r: &mut reader,
            pos: 0,
            len,
            path,
        };
        let binary_version = p.u32("binary version")?;
        if binary_version != SUPPORTED_BINARY_VERSION {
            return Err(p.err(format!(
                "binary version {binary_version} is not supported (only {SUPPORTED_BINARY_VERSION})"
            )));
        }
        let spec = p.string("spec name")?;
        if spec != WHISPER_SPEC {
            return Err(p.err(format!(
                "spec is `{spec}`, not a Whisper model ({WHISPER_SPEC})"
            )));
        }
        let spec_revision = p.u32("spec revision")?;
        let count = p.u32("variable count")?;
        let mut variables = BTreeMap::new();
        for _ in 0..count {
            let name = p.string("variable name")?;
            let rank = p.u8("rank")?;
            let mut shape = Vec::with_capacity(rank as usize);
            for _ in 0..rank {
                shape.push(p.u32("dimension")? as usize);
            }
            let code = p.u8("dtype")?;
            let dtype = DType::from_code(code)
                .ok_or_else(|| p.err(format!("`{name}` has unknown dtype code {code}")))?;
            let byte_len = u64::from(p.u32("byte count")?);
            // Checked: a shape of huge dimensions overflowed u64 (found by the ct2_import
            // fuzz target), and wrapped could even match the byte count.
            let expected = shape
                .iter()
                .try_fold(dtype.size(), |n, &d| n.checked_mul(d as u64));
            if expected != Some(byte_len) {
                let expected = expected.map_or("more than 2^64".into(), |n| n.to_string());
                return Err(p.err(format!(
                    "`{name}` {shape:?} {} has {byte_len} bytes, expected {expected}",
                    dtype.name()
                )));
            }
            let offset = p.pos;
            p.skip(byte_len, &format!("data of `{name}`"))?;
            variables.insert(
                name.clone(),
                Variable {
                    name,
                    shape,
                    dtype,
                    offset,
                    byte_len,
                },
            );
        }
        let mut aliases = BTreeMap::new();
        // Files without aliases may end right after the variables.
        if p.pos < p.len {
            let n = p.u32("alias count")?;
            for _ in 0..n {
                let alias = p.string("alias")?;
                let target = p.string("alias target")?;
                if !variables.contains_key(&target) {
                    return Err(p.err(format!("alias `{alias}` names missing `{target}`")));
                }
                aliases.insert(alias, target);
            }
        }
        if p.pos != p.len {
            return Err(p.err(format!(
                "{} unexpected bytes after the aliases",
                p.len - p.pos
            )));
        }
        Ok(Self {
            reader,
            path: path.to_owned(),
            binary_version,
            spec,
            spec_revision,
            variables,
            aliases,
        })
    }

    fn raw(&mut self, name: &str) -> Result<(Variable, Vec<u8>), ModelError> {
        let v = self.require(name)?.clone();
        let mut buf = vec![0u8; v.byte_len as usize];
        self.reader
            .seek(SeekFrom::Start(v.offset))
            .and_then(|_| self.reader.read_exact(&mut buf))
            .map_err(|e| ModelError::io("reading", self.path.clone(), e))?;
        Ok((v, buf))
    }

    fn float_check(&self, v: &Variable) -> Result<(), ModelError> {
        if v.dtype.is_float() {
            Ok(())
        } else {
            Err(ModelError::Quantized {
                path: self.path.clone(),
                variable: v.name.clone(),
                dtype: v.dtype.name().to_owned(),
            })
        }
    }

    /// Reads an integer scalar (e.g. `encoder/num_heads`).
    ///
    /// # Errors
    /// [`ModelError::Ct2Model`] when it is missing or not an integer scalar.
    pub fn scalar_int(&mut self, name: &str) -> Result<i64, ModelError> {
        let (v, b) = self.raw(name)?;
        let value = match (v.len(), v.dtype) {
            (1, DType::I8) => i64::from(b[0] as i8),
            (1, DType::I16) => i64::from(i16::from_le_bytes([b[0], b[1]])),
            (1, DType::I32) => i64::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            _ => {
                return Err(ModelError::Ct2Model {
                    path: self.path.clone(),
                    reason: format!(
                        "`{name}` is not an integer scalar ({:?} {:?})",
                        v.shape, v.dtype
                    ),
                });
            }
        };
        Ok(value)
    }

    /// Reads a float variable as `f32` (converting from f16/bf16).
    ///
    /// # Errors
    /// [`ModelError::Quantized`] for integer data, [`ModelError::Ct2Model`] when missing.
    pub fn read_f32(&mut self, name: &str) -> Result<(Variable, Vec<f32>), ModelError> {
        let v = self.require(name)?.clone();
        self.float_check(&v)?;
        let (v, b) = self.raw(name)?;
        let data = match v.dtype {
            DType::F32 => b
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            DType::F16 => b
                .chunks_exact(2)
                .map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]])))
                .collect(),
            _ => b
                .chunks_exact(2)
                .map(|c| bf16_to_f32(u16::from_le_bytes([c[0], c[1]])))
                .collect(),
        };
        Ok((v, data))
    }

    /// Reads a float variable as binary16 bits (f16 data is copied, not converted).
    ///
    /// # Errors
    /// [`ModelError::Quantized`] for integer data, [`ModelError::Ct2Model`] when missing.
    pub fn read_f16(&mut self, name: &str) -> Result<(Variable, Vec<u16>), ModelError> {
        let v = self.require(name)?.clone();
        self.float_check(&v)?;
        if v.dtype == DType::F16 {
            let (v, b) = self.raw(name)?;
            return Ok((
                v,
                b.chunks_exact(2)
                    .map(|c| u16::from_le_bytes([c[0], c[1]]))
                    .collect(),
            ));
        }
        let (v, f) = self.read_f32(name)?;
        Ok((v, f.into_iter().map(f32_to_f16).collect()))
    }
}

/// What the importer uses from `config.json` (all optional).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize)]
pub struct Ct2Config {
    /// Token ids of the language tokens (empty for English-only models).
    #[serde(default)]
    pub lang_ids: Vec<u32>,
    /// Token ids suppressed at every step.
    #[serde(default)]
    pub suppress_ids: Vec<i64>,
    /// Token ids suppressed at the first step.
    #[serde(default)]
    pub suppress_ids_begin: Vec<i64>,
    /// (layer, head) pairs used for word alignment.
    #[serde(default)]
    pub alignment_heads: Vec<(u32, u32)>,
}

/// Reads `config.json` in `dir`; `None` when there is none.
///
/// # Errors
/// [`ModelError::Config`] when it exists but does not parse.
pub fn read_config(dir: &Path) -> Result<Option<Ct2Config>, ModelError> {
    let path = dir.join("config.json");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(ModelError::io("reading", path, e)),
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| ModelError::Config {
            path,
            reason: e.to_string(),
        })
}

/// The vocabulary of a CTranslate2 export, as GPT-2 byte-level strings (one per token id).
///
/// Reads `vocabulary.json` (a JSON array of strings, newer exports) or else
/// `vocabulary.txt` (one token a line, split on `\n` only: in multilingual models id 50256 is
/// an empty line, and dropping it would shift every later id).
///
/// # Errors
/// [`ModelError::Vocabulary`] when neither file exists or one is malformed.
pub fn read_vocabulary(dir: &Path) -> Result<(PathBuf, Vec<String>), ModelError> {
    let json = dir.join("vocabulary.json");
    if json.is_file() {
        let text =
            std::fs::read_to_string(&json).map_err(|e| ModelError::io("reading", &json, e))?;
        let tokens: Vec<String> =
            serde_json::from_str(&text).map_err(|e| ModelError::Vocabulary {
                path: json.clone(),
                reason: e.to_string(),
            })?;
        return Ok((json, tokens));
    }
    let txt = dir.join("vocabulary.txt");
    let bytes = match std::fs::read(&txt) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ModelError::Vocabulary {
                path: dir.to_owned(),
                reason: "neither vocabulary.json nor vocabulary.txt found".into(),
            });
        }
        Err(e) => return Err(ModelError::io("reading", txt, e)),
    };
    let tokens = split_vocabulary_txt(&bytes).map_err(|reason| ModelError::Vocabulary {
        path: txt.clone(),
        reason,
    })?;
    Ok((txt, tokens))
}

/// Splits `vocabulary.txt` into tokens: on `\n` only, keeping empty lines, dropping only the
/// empty piece after a final newline.
pub fn split_vocabulary_txt(bytes: &[u8]) -> Result<Vec<String>, String> {
    let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    if body.is_empty() {
        return Ok(Vec::new());
    }
    body.split(|&b| b == b'\n')
        .enumerate()
        .map(|(id, line)| {
            String::from_utf8(line.to_vec()).map_err(|_| format!("token {id} is not UTF-8"))
        })
        .collect()
}

/// GPT-2's printable bytes, which byte-level BPE maps to the same code point
/// (openai/gpt-2 encoder.py `bytes_to_unicode`): `!`..`~`, `¡`..`¬`, `®`..`ÿ`.
fn is_printable_byte(b: u8) -> bool {
    matches!(b, b'!'..=b'~' | 0xa1..=0xac | 0xae..=0xff)
}

/// The inverse of GPT-2's `bytes_to_unicode`: code point -> byte.
///
/// Printable bytes map to themselves; the other 68 bytes, in increasing order, map to
/// U+0100, U+0101, ...
fn unicode_to_byte_table() -> BTreeMap<char, u8> {
    let mut table = BTreeMap::new();
    let mut next = 0u32;
    for b in 0..=255u8 {
        let c = if is_printable_byte(b) {
            char::from(b)
        } else {
            let c = char::from_u32(256 + next).unwrap_or(char::REPLACEMENT_CHARACTER);
            next += 1;
            c
        };
        table.insert(c, b);
    }
    table
}

/// Decodes GPT-2 byte-level token strings to raw bytes (what whisper.cpp's vocabulary holds).
///
/// # Errors
/// The id and text of the first token with a character outside GPT-2's byte alphabet.
pub fn decode_tokens(tokens: &[String]) -> Result<Vec<Vec<u8>>, String> {
    let table = unicode_to_byte_table();
    tokens
        .iter()
        .enumerate()
        .map(|(id, t)| {
            t.chars()
                .map(|c| table.get(&c).copied())
                .collect::<Option<Vec<u8>>>()
                .ok_or_else(|| format!("token {id} ({t:?}) is not a GPT-2 byte-level string"))
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Cursor;

    /// Builds a synthetic `model.bin` in memory.
    #[derive(Default)]
    pub(crate) struct Ct2Builder {
        vars: Vec<(String, Vec<u32>, u8, Vec<u8>)>,
        aliases: Vec<(String, String)>,
    }

    fn put_str(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(&((s.len() + 1) as u16).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
        out.push(0);
    }

    impl Ct2Builder {
        pub(crate) fn raw(
            &mut self,
            name: &str,
            shape: &[u32],
            dtype: u8,
            data: Vec<u8>,
        ) -> &mut Self {
            self.vars.push((name.into(), shape.to_vec(), dtype, data));
            self
        }

        /// An f16 tensor whose element i is `base + i * 0.001` (exact enough in f16 for tests).
        pub(crate) fn f16(&mut self, name: &str, shape: &[u32], base: f32) -> &mut Self {
            let n: u32 = shape.iter().product();
            let data = (0..n)
                .flat_map(|i| f32_to_f16(base + (i % 512) as f32 * 0.001).to_le_bytes())
                .collect();
            self.raw(name, shape, 4, data)
        }

        pub(crate) fn f32(&mut self, name: &str, shape: &[u32], values: &[f32]) -> &mut Self {
            let data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            self.raw(name, shape, 0, data)
        }

        pub(crate) fn i16_scalar(&mut self, name: &str, v: i16) -> &mut Self {
            self.raw(name, &[], 2, v.to_le_bytes().to_vec())
        }

        pub(crate) fn alias(&mut self, alias: &str, target: &str) -> &mut Self {
            self.aliases.push((alias.into(), target.into()));
            self
        }

        pub(crate) fn bytes(&self) -> Vec<u8> {
            let mut out = Vec::new();
            out.extend_from_slice(&6u32.to_le_bytes());
            put_str(&mut out, "WhisperSpec");
            out.extend_from_slice(&3u32.to_le_bytes());
            out.extend_from_slice(&(self.vars.len() as u32).to_le_bytes());
            for (name, shape, dtype, data) in &self.vars {
                put_str(&mut out, name);
                out.push(shape.len() as u8);
                for d in shape {
                    out.extend_from_slice(&d.to_le_bytes());
                }
                out.push(*dtype);
                out.extend_from_slice(&(data.len() as u32).to_le_bytes());
                out.extend_from_slice(data);
            }
            out.extend_from_slice(&(self.aliases.len() as u32).to_le_bytes());
            for (a, t) in &self.aliases {
                put_str(&mut out, a);
                put_str(&mut out, t);
            }
            out
        }
    }

    fn parse(bytes: Vec<u8>) -> Result<Ct2Model<Cursor<Vec<u8>>>, ModelError> {
        Ct2Model::from_reader(Cursor::new(bytes), Path::new("test/model.bin"))
    }

    fn small() -> Ct2Builder {
        let mut b = Ct2Builder::default();
        b.f16("decoder/embeddings/weight", &[4, 2], 0.5)
            .f32("encoder/layer_norm/gamma", &[2], &[1.0, -2.5])
            .i16_scalar("encoder/num_heads", 6)
            .alias("decoder/projection/weight", "decoder/embeddings/weight");
        b
    }

    #[test]
    fn parses_variables_scalars_and_aliases() -> Result<(), ModelError> {
        let mut m = parse(small().bytes())?;
        assert_eq!(
            (m.binary_version, m.spec.as_str(), m.spec_revision),
            (6, "WhisperSpec", 3)
        );
        assert_eq!(m.variables().count(), 3);
        let emb = m.get("decoder/embeddings/weight").cloned();
        assert_eq!(
            emb.as_ref().map(|v| (v.shape.clone(), v.dtype)),
            Some((vec![4, 2], DType::F16))
        );
        assert_eq!(m.get("decoder/projection/weight"), emb.as_ref());
        assert_eq!(
            m.aliases().collect::<Vec<_>>(),
            [("decoder/projection/weight", "decoder/embeddings/weight")]
        );
        assert_eq!(m.scalar_int("encoder/num_heads")?, 6);
        let (_, g) = m.read_f32("encoder/layer_norm/gamma")?;
        assert_eq!(g, [1.0, -2.5]);
        let (_, p) = m.read_f32("decoder/projection/weight")?;
        assert_eq!(p.len(), 8);
        assert!((p[3] - 0.503).abs() < 1e-3);
        let (_, h) = m.read_f16("encoder/layer_norm/gamma")?;
        assert_eq!(h, [0x3c00, 0xc100]);
        assert!(m.quantized_variable().is_none());
        Ok(())
    }

    #[test]
    fn missing_variable_is_an_error() -> Result<(), ModelError> {
        let mut m = parse(small().bytes())?;
        let e = m.read_f32("decoder/layer_norm/gamma").err();
        assert!(matches!(e, Some(ModelError::Ct2Model { .. })), "{e:?}");
        Ok(())
    }

    #[test]
    fn int8_weights_are_rejected() -> Result<(), ModelError> {
        let mut b = small();
        b.raw(
            "encoder/layer_0/ffn/linear_0/weight",
            &[2, 2],
            1,
            vec![1, 2, 3, 4],
        )
        .f32(
            "encoder/layer_0/ffn/linear_0/weight_scale",
            &[2],
            &[0.5, 0.5],
        );
        let mut m = parse(b.bytes())?;
        let q = m.quantized_variable().map(|v| v.name.clone());
        assert_eq!(q.as_deref(), Some("encoder/layer_0/ffn/linear_0/weight"));
        let e = m.read_f16("encoder/layer_0/ffn/linear_0/weight").err();
        let msg = e.map(|e| e.to_string()).unwrap_or_default();
        assert!(
            msg.contains("int8") && msg.contains("quantization float16"),
            "{msg}"
        );
        Ok(())
    }

    #[test]
    fn truncated_file_is_an_error_with_offset() {
        let bytes = small().bytes();
        for cut in [3, 10, 40, bytes.len() / 2, bytes.len() - 30] {
            let e = parse(bytes[..cut].to_vec()).err();
            match e {
                Some(ModelError::Ct2Format {
                    offset, ref reason, ..
                }) => {
                    assert!(offset <= cut as u64, "cut {cut}: offset {offset}");
                    assert!(
                        reason.contains("truncated") || reason.contains("alias"),
                        "cut {cut}: {reason}"
                    );
                }
                other => panic!("cut {cut}: {other:?}"),
            }
        }
    }

    #[test]
    fn wrong_byte_count_and_version_are_errors() {
        let mut b = Ct2Builder::default();
        b.raw("x", &[3], 4, vec![0; 4]);
        let e = parse(b.bytes())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("has 4 bytes, expected 6"), "{e}");
        let mut bytes = small().bytes();
        bytes[0] = 5;
        let e = parse(bytes)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("binary version 5"), "{e}");
    }

    /// Found by the `ct2_import` fuzz target: the byte count of a shape with huge dimensions
    /// overflowed (a panic with overflow checks, a wrapped comparison without).
    #[test]
    fn overflowing_shape_is_an_error() {
        let mut b = Ct2Builder::default();
        b.raw("x", &[u32::MAX, u32::MAX, u32::MAX], 0, vec![]);
        let e = parse(b.bytes())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("has 0 bytes, expected more than 2^64"), "{e}");
    }

    #[test]
    fn dangling_alias_is_an_error() {
        let mut b = small();
        b.alias("a", "nope");
        let e = parse(b.bytes())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("missing `nope`"), "{e}");
    }

    #[test]
    fn vocabulary_keeps_empty_lines() -> Result<(), String> {
        // Multilingual layout: id 50256 is an empty line, <|endoftext|> follows it.
        let mut text = String::new();
        for i in 0..50256 {
            text.push_str(&format!("t{i}\n"));
        }
        text.push('\n');
        text.push_str("<|endoftext|>\n<|startoftranscript|>\n");
        let v = split_vocabulary_txt(text.as_bytes())?;
        assert_eq!(v.len(), 50259);
        assert_eq!(v[50255], "t50255");
        assert_eq!(v[50256], "");
        assert_eq!(v[50257], "<|endoftext|>");
        // No final newline: same tokens.
        assert_eq!(
            split_vocabulary_txt(text.trim_end_matches('\n').as_bytes())?,
            v
        );
        assert!(split_vocabulary_txt(b"").map(|v| v.is_empty())?);
        Ok(())
    }

    #[test]
    fn gpt2_byte_decoding() -> Result<(), String> {
        let tokens: Vec<String> = ["Ġhello", "!", "Ċ", "ĉ", "Ā", "ł", "Ń", "Ã©", "<|en|>", ""]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let b = decode_tokens(&tokens)?;
        assert_eq!(b[0], b" hello");
        assert_eq!(b[1], b"!");
        assert_eq!(b[2], b"\n");
        assert_eq!(b[3], b"\t");
        assert_eq!(b[4], [0u8]); // U+0100 is byte 0
        assert_eq!(b[5], [0xa0]); // U+0142: the last of 0x7f..=0xa0
        assert_eq!(b[6], [0xad]); // U+0143: soft hyphen, the last non-printable
        assert_eq!(b[7], "é".as_bytes());
        assert_eq!(b[8], b"<|en|>");
        assert!(b[9].is_empty());
        let table = unicode_to_byte_table();
        assert_eq!(table.len(), 256);
        assert!(decode_tokens(&["\u{4e2d}".to_string()]).is_err());
        Ok(())
    }
}
