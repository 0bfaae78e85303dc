//! The model catalog: [`ModelName`] (the Whisper models we know, with whisper.cpp's file
//! names, sizes and hashes) and [`ModelSpec`] (a name, a quantized name such as `base-q8_0`,
//! or a path, as users type them).

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::error::ModelError;
use crate::quantize::QuantType;

/// A Whisper model from the catalog.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ModelName {
    /// tiny (39 M parameters, multilingual).
    Tiny,
    /// tiny.en (English only).
    TinyEn,
    /// base (74 M, multilingual).
    Base,
    /// base.en (English only).
    BaseEn,
    /// small (244 M, multilingual).
    Small,
    /// small.en (English only).
    SmallEn,
    /// medium (769 M, multilingual).
    Medium,
    /// medium.en (English only).
    MediumEn,
    /// large-v3 (1550 M, multilingual, 128 mel bands).
    LargeV3,
    /// large-v3-turbo (large-v3's encoder with a 4-layer decoder).
    LargeV3Turbo,
}

/// Shapes of a Whisper model (openai/whisper `ModelDimensions`, per checkpoint).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModelDims {
    /// Width of the encoder and decoder.
    pub n_state: usize,
    /// Attention heads.
    pub n_head: usize,
    /// Encoder blocks.
    pub n_audio_layer: usize,
    /// Decoder blocks.
    pub n_text_layer: usize,
    /// Mel bands.
    pub n_mels: usize,
    /// Vocabulary size.
    pub n_vocab: usize,
}

/// A whisper.cpp ggml file published on Hugging Face: exact size and SHA-1.
///
/// SHA-1s are from whisper.cpp's `models/README.md`; sizes are the Hugging Face file sizes
/// (ggerganov/whisper.cpp, revision 5359861c), as listed by several independent projects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Published {
    /// Size in bytes.
    pub size: u64,
    /// SHA-1, lowercase hex.
    pub sha1: &'static str,
}

impl ModelName {
    /// Every model, smallest first.
    pub const ALL: [ModelName; 10] = [
        Self::Tiny,
        Self::TinyEn,
        Self::Base,
        Self::BaseEn,
        Self::Small,
        Self::SmallEn,
        Self::Medium,
        Self::MediumEn,
        Self::LargeV3,
        Self::LargeV3Turbo,
    ];

    /// The name as users type it: `tiny.en`, `large-v3-turbo`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tiny => "tiny",
            Self::TinyEn => "tiny.en",
            Self::Base => "base",
            Self::BaseEn => "base.en",
            Self::Small => "small",
            Self::SmallEn => "small.en",
            Self::Medium => "medium",
            Self::MediumEn => "medium.en",
            Self::LargeV3 => "large-v3",
            Self::LargeV3Turbo => "large-v3-turbo",
        }
    }

    /// Valid names, comma-separated (for error and help messages).
    pub fn valid_names() -> String {
        Self::ALL.map(Self::as_str).join(", ")
    }

    /// whisper.cpp's file name: `ggml-<name>.bin`.
    pub fn file_name(self) -> String {
        format!("ggml-{}.bin", self.as_str())
    }

    /// Whether the model only knows English.
    pub fn is_english_only(self) -> bool {
        self.as_str().ends_with(".en")
    }

    /// The published whisper.cpp f16 file (size, SHA-1).
    pub fn published(self) -> Published {
        let (size, sha1) = match self {
            Self::Tiny => (77_691_713, "bd577a113a864445d4c299885e0cb97d4ba92b5f"),
            Self::TinyEn => (77_704_715, "c78c86eb1a8faa21b369bcd33207cc90d64ae9df"),
            Self::Base => (147_951_465, "465707469ff3a37a2b9b8d8f89f2f99de7299dac"),
            Self::BaseEn => (147_964_211, "137c40403d78fd54d454da0f9bd998f78703390c"),
            Self::Small => (487_601_967, "55356645c2b361a969dfd0ef2c5a50d530afd8d5"),
            Self::SmallEn => (487_614_201, "db8a495a91d927739e50b3fc1cc4c6b8f6c2d022"),
            Self::Medium => (1_533_763_059, "fd9727b6e1217c2f614f9b698455c4ffd82463b4"),
            Self::MediumEn => (1_533_774_781, "8c30f0e44ce9560643ebd10bbe50cd20eafd3723"),
            Self::LargeV3 => (3_095_033_483, "ad82bf6a9043ceed055076d0fd39f5f186ff8062"),
            Self::LargeV3Turbo => (1_624_555_275, "4af2b29d7ec73d781377bfd1758ca957a807e941"),
        };
        Published { size, sha1 }
    }

    /// Approximate size on disk in bytes (of the f16 ggml file).
    pub fn approx_size(self) -> u64 {
        self.published().size
    }

    /// The model's shapes.
    pub fn dims(self) -> ModelDims {
        let en = self.is_english_only();
        let n_vocab = match self {
            Self::LargeV3 | Self::LargeV3Turbo => 51866,
            _ if en => 51864,
            _ => 51865,
        };
        let (n_state, n_head, n_audio_layer, n_text_layer, n_mels) = match self {
            Self::Tiny | Self::TinyEn => (384, 6, 4, 4, 80),
            Self::Base | Self::BaseEn => (512, 8, 6, 6, 80),
            Self::Small | Self::SmallEn => (768, 12, 12, 12, 80),
            Self::Medium | Self::MediumEn => (1024, 16, 24, 24, 80),
            Self::LargeV3 => (1280, 20, 32, 32, 128),
            Self::LargeV3Turbo => (1280, 20, 32, 4, 128),
        };
        ModelDims {
            n_state,
            n_head,
            n_audio_layer,
            n_text_layer,
            n_mels,
            n_vocab,
        }
    }

    /// whisper.cpp's hparams for this model as an f16 file (30 s encoder window of 1500
    /// positions, 448 decoder positions).
    pub fn hparams(self) -> crate::ggml::Hparams {
        let d = self.dims();
        crate::ggml::Hparams {
            n_vocab: d.n_vocab,
            n_audio_ctx: 1500,
            n_audio_state: d.n_state,
            n_audio_head: d.n_head,
            n_audio_layer: d.n_audio_layer,
            n_text_ctx: 448,
            n_text_state: d.n_state,
            n_text_head: d.n_head,
            n_text_layer: d.n_text_layer,
            n_mels: d.n_mels,
            ftype: crate::ggml::FTYPE_F16,
        }
    }
}

impl fmt::Display for ModelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ModelName {
    type Err = ModelError;

    /// Parses a catalog name (exact, lowercase; `ggml-tiny.en.bin` is not a name).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| ModelError::UnknownModel {
                name: s.to_owned(),
                valid: Self::valid_names(),
            })
    }
}

impl serde::Serialize for ModelName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for ModelName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// What the user asked for: a catalog name, a quantized catalog name, or a path to a ggml
/// file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModelSpec {
    /// A catalog model, found in the cache or fetched.
    Name(ModelName),
    /// A catalog model's weights as ggml quantized blocks (`base-q8_0`, whisper.cpp's names
    /// for its quantized files): found in the cache, or made there from the f16 file by
    /// ggml's own quantizer (`FetchOptions::quantizer`).
    Quantized(ModelName, QuantType),
    /// A ggml file on disk, used as is.
    Path(PathBuf),
}

impl ModelSpec {
    /// Parses what the user typed.
    ///
    /// A string that looks like a path (it contains a path separator or ends with `.bin`)
    /// and exists is a path; otherwise it must be a catalog name, or one followed by
    /// `-q8_0`, `-q5_1`, `-q5_0`, `-q4_1` or `-q4_0`.
    ///
    /// # Errors
    /// [`ModelError::NotFound`] for a path-like string naming no file,
    /// [`ModelError::UnknownModel`] for anything else that is not a name.
    pub fn parse(s: &str) -> Result<Self, ModelError> {
        let looks_like_path =
            s.contains('/') || s.contains(std::path::MAIN_SEPARATOR) || s.ends_with(".bin");
        if looks_like_path && Path::new(s).exists() {
            return Ok(Self::Path(PathBuf::from(s)));
        }
        if let Some((base, quant)) = s.rsplit_once('-')
            && let (Ok(name), Ok(quant)) = (base.parse::<ModelName>(), quant.parse::<QuantType>())
        {
            return Ok(Self::Quantized(name, quant));
        }
        match s.parse::<ModelName>() {
            Ok(name) => Ok(Self::Name(name)),
            Err(_) if looks_like_path => Err(ModelError::NotFound {
                model: s.to_owned(),
                tried: vec![format!("path {s}: no such file")],
            }),
            Err(e) => Err(e),
        }
    }
}

impl FromStr for ModelSpec {
    type Err = ModelError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for ModelSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Name(n) => n.fmt(f),
            Self::Quantized(n, q) => write!(f, "{n}-{q}"),
            Self::Path(p) => p.display().fmt(f),
        }
    }
}

impl ModelSpec {
    /// The cache file name of a catalog spec (`ggml-base.bin`, `ggml-base-q8_0.bin`); `None`
    /// for a path.
    pub fn file_name(&self) -> Option<String> {
        match self {
            Self::Name(n) => Some(n.file_name()),
            Self::Quantized(..) => Some(format!("ggml-{self}.bin")),
            Self::Path(_) => None,
        }
    }
}

impl From<ModelName> for ModelSpec {
    fn from(n: ModelName) -> Self {
        Self::Name(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() -> Result<(), ModelError> {
        for m in ModelName::ALL {
            assert_eq!(m.as_str().parse::<ModelName>()?, m);
            assert_eq!(m.to_string(), m.as_str());
            assert_eq!(m.file_name(), format!("ggml-{m}.bin"));
            assert_eq!(m.published().sha1.len(), 40);
        }
        assert_eq!(ModelName::TinyEn.file_name(), "ggml-tiny.en.bin");
        assert_eq!(
            ModelName::LargeV3Turbo.file_name(),
            "ggml-large-v3-turbo.bin"
        );
        Ok(())
    }

    #[test]
    fn unknown_name_lists_valid_ones() {
        let e = "large"
            .parse::<ModelName>()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("unknown model `large`"), "{e}");
        assert!(
            e.contains("tiny, tiny.en, base") && e.contains("large-v3-turbo"),
            "{e}"
        );
    }

    #[test]
    fn dims_match_whisper() {
        let t = ModelName::TinyEn.dims();
        assert_eq!(
            (t.n_state, t.n_audio_layer, t.n_vocab, t.n_mels),
            (384, 4, 51864, 80)
        );
        assert_eq!(ModelName::Base.dims().n_vocab, 51865);
        let l = ModelName::LargeV3Turbo.dims();
        assert_eq!((l.n_text_layer, l.n_mels, l.n_vocab), (4, 128, 51866));
    }

    #[test]
    fn spec_parsing() -> Result<(), Box<dyn std::error::Error>> {
        assert_eq!(
            ModelSpec::parse("tiny.en")?,
            ModelSpec::Name(ModelName::TinyEn)
        );
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("x.bin");
        std::fs::write(&file, b"ggml")?;
        let s = file.to_string_lossy().into_owned();
        assert_eq!(ModelSpec::parse(&s)?, ModelSpec::Path(file.clone()));
        // Path-like but missing: NotFound, not UnknownModel.
        let missing = dir.path().join("nope.bin").to_string_lossy().into_owned();
        assert!(matches!(
            ModelSpec::parse(&missing),
            Err(ModelError::NotFound { .. })
        ));
        assert!(matches!(
            ModelSpec::parse("./nope.bin"),
            Err(ModelError::NotFound { .. })
        ));
        assert!(matches!(
            ModelSpec::parse("huge"),
            Err(ModelError::UnknownModel { .. })
        ));
        assert_eq!(ModelSpec::Name(ModelName::Base).to_string(), "base");
        // Quantized names: whisper.cpp's file names, made by our quantizer.
        let q = ModelSpec::parse("tiny.en-q8_0")?;
        assert_eq!(q, ModelSpec::Quantized(ModelName::TinyEn, QuantType::Q8_0));
        assert_eq!(q.to_string(), "tiny.en-q8_0");
        assert_eq!(q.file_name().as_deref(), Some("ggml-tiny.en-q8_0.bin"));
        assert_eq!(
            ModelSpec::parse("large-v3-turbo-q5_0")?,
            ModelSpec::Quantized(ModelName::LargeV3Turbo, QuantType::Q5_0)
        );
        assert_eq!(
            ModelSpec::parse("large-v3-turbo")?,
            ModelSpec::Name(ModelName::LargeV3Turbo)
        );
        for bad in ["tiny.en-q3_0", "huge-q8_0", "tiny.en-"] {
            assert!(
                matches!(ModelSpec::parse(bad), Err(ModelError::UnknownModel { .. })),
                "{bad}"
            );
        }
        Ok(())
    }

    #[test]
    fn serde_uses_names() -> Result<(), serde_json::Error> {
        assert_eq!(serde_json::to_string(&ModelName::LargeV3)?, "\"large-v3\"");
        assert_eq!(
            serde_json::from_str::<ModelName>("\"base.en\"")?,
            ModelName::BaseEn
        );
        assert!(serde_json::from_str::<ModelName>("\"x\"").is_err());
        Ok(())
    }
}
