//! Command-line flags that both binaries take, defined once: where and how Whisper runs
//! ([`EngineArgs`], flattened into `transcribe` and `transcribe-server`), bounds on each
//! decode ([`DecodeArgs`], likewise) and the on/off switch type ([`OnOff`]). Each flag has a `TRANSCRIBE_*` environment equivalent; the flag
//! wins when both are given.
#![warn(missing_docs)]

use clap::ValueEnum;

/// Where and how Whisper runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct EngineArgs {
    /// Threads per decode [default: `transcribe`: the CPU cores, at most 8;
    /// `transcribe-server`: 1 on 2 or fewer cores, else cores / workers, at most 4].
    #[arg(short = 't', long, env = "TRANSCRIBE_THREADS")]
    pub threads: Option<usize>,

    /// Run on the CPU even when this binary has a GPU backend (see `--version`).
    #[arg(long, env = "TRANSCRIBE_CPU")]
    pub cpu: bool,

    /// GPU to use, by index, on builds with a GPU backend.
    #[arg(long, env = "TRANSCRIBE_GPU_DEVICE", default_value_t = 0)]
    pub gpu_device: u16,

    /// Flash attention in the encoder and decoder [default: on with a GPU backend, off on
    /// the CPU].
    #[arg(long, env = "TRANSCRIBE_FLASH_ATTN", value_enum)]
    pub flash_attn: Option<OnOff>,
}

impl EngineArgs {
    /// Whether to use the GPU: the build has a GPU backend (`gpu_build`) and `--cpu` was not
    /// given.
    pub fn use_gpu(&self, gpu_build: bool) -> bool {
        gpu_build && !self.cpu
    }

    /// Flash attention: as given, else on exactly when the GPU is used.
    pub fn flash_attn(&self, use_gpu: bool) -> bool {
        self.flash_attn.map_or(use_gpu, OnOff::is_on)
    }
}

/// Bounds on the work of one decode: fixed work per decode, for timing (random-weight
/// models decode garbage of any length) and capacity measurements.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct DecodeArgs {
    /// Upper bound on text tokens per segment (whisper's max_tokens) [default: no bound;
    /// streaming partials: 16 plus 8 per second of their audio].
    #[arg(long, env = "TRANSCRIBE_MAX_TOKENS")]
    pub max_tokens: Option<u32>,

    /// Turn off whisper's temperature fallback (re-decoding at a higher temperature when the
    /// text looks degenerate): fixed work per decode, e.g. for timing.
    #[arg(long, env = "TRANSCRIBE_NO_FALLBACK")]
    pub no_fallback: bool,

    /// Decode without timestamp tokens (one segment per decode). With a random-weight model
    /// (`transcribe models synth`) this makes every decode run to --max-tokens: a random
    /// timestamp past the audio's end would otherwise stop it after a few tokens.
    #[arg(long, env = "TRANSCRIBE_NO_TIMESTAMPS")]
    pub no_timestamps: bool,
}

/// An on/off switch (`true`/`false` and `1`/`0` are accepted too).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OnOff {
    /// Enabled.
    #[value(alias = "true", alias = "1")]
    On,
    /// Disabled.
    #[value(alias = "false", alias = "0")]
    Off,
}

impl OnOff {
    /// Whether it is on.
    pub fn is_on(self) -> bool {
        self == Self::On
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        engine: EngineArgs,
    }

    #[test]
    fn switches_parse_with_aliases() -> Result<(), clap::Error> {
        for (given, want) in [
            ("on", true),
            ("1", true),
            ("true", true),
            ("off", false),
            ("0", false),
        ] {
            let cli = Cli::try_parse_from(["x", "--flash-attn", given])?;
            assert_eq!(
                cli.engine.flash_attn.map(OnOff::is_on),
                Some(want),
                "{given}"
            );
        }
        assert!(Cli::try_parse_from(["x", "--flash-attn", "maybe"]).is_err());
        let cli = Cli::try_parse_from(["x", "-t", "3", "--cpu", "--gpu-device", "1"])?;
        assert_eq!(cli.engine.threads, Some(3));
        assert!(!cli.engine.use_gpu(true) && !cli.engine.flash_attn(false));
        Ok(())
    }
}
