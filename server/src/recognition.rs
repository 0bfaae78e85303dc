//! Request validation: a `RecognitionConfig` (shared by Recognize, StreamingRecognize and
//! the caption sources) into a [`Recognition`], and a `StreamingRecognitionConfig` into a
//! [`StreamSetup`]: the streaming policy's settings (the server's flags, then the client's),
//! the audio format and what the pipeline reports. Pure functions of the request, the
//! server's configuration and the served models.

use std::time::Duration;

use transcribe_core::audio::seconds_to_samples;
use transcribe_core::policy::{DEFAULT_PROMPT_MAX_CHARS, PolicyConfig};
use transcribe_core::{ConfigError, language};
use transcribe_proto::duration::to_std as std_duration;
use transcribe_proto::v1::{RecognitionConfig, StreamingRecognitionConfig};

use crate::config::ServerConfig;
use crate::convert::WordOptions;
use crate::error::RequestError;
use crate::ingest::RawFormat;
use crate::models::ModelInfo;
use crate::pipeline::PipelineConfig;

/// Settings shared by Recognize and StreamingRecognize, validated.
#[derive(Debug, Clone)]
pub(crate) struct Recognition {
    /// Index of the model in the pool.
    pub model: usize,
    pub model_name: String,
    pub language: Option<String>,
    pub translate: bool,
    pub prompt: Option<String>,
    pub words: WordOptions,
    pub no_speech_threshold: Option<f32>,
    /// `decoding_options.condition_on_previous_text`, if set.
    pub condition_on_previous_text: Option<bool>,
}

/// Validates a `RecognitionConfig` (all but its audio format). `field` is its path in the
/// request, for field violations.
pub(crate) fn parse_recognition(
    config: &RecognitionConfig,
    field: &str,
    models: &[ModelInfo],
) -> Result<Recognition, RequestError> {
    let (model, info) = if config.model.is_empty() {
        models.first().map(|m| (0, m))
    } else {
        models
            .iter()
            .enumerate()
            .find(|(_, m)| m.name == config.model)
    }
    .ok_or_else(|| RequestError::UnknownModel {
        name: config.model.clone(),
        valid: models.iter().map(|m| m.name.clone()).collect(),
    })?;

    let language = match config.language_codes.as_slice() {
        [] => None,
        [code] => {
            let primary = code
                .split(['-', '_'])
                .next()
                .unwrap_or_default()
                .to_ascii_lowercase();
            if primary.is_empty() || !language::is_known(&primary) {
                return Err(RequestError::invalid(
                    format!("{field}.language_codes"),
                    format!(
                        "{code:?} is not a language Whisper knows (use a BCP-47 code like en-US)"
                    ),
                ));
            }
            if !info.multilingual && primary != "en" {
                return Err(RequestError::invalid(
                    format!("{field}.language_codes"),
                    format!(
                        "model {} is English-only; it cannot recognize {code:?}",
                        info.name
                    ),
                ));
            }
            Some(primary)
        }
        _ => {
            return Err(RequestError::invalid(
                format!("{field}.language_codes"),
                "give at most one language (several to choose from are not supported yet)",
            ));
        }
    };
    // English-only models know one language; saying so keeps whisper.cpp's language
    // detection (meaningless on them) out of the results.
    let language = if info.multilingual {
        language
    } else {
        Some("en".to_owned())
    };
    let translate = match config.task() {
        transcribe_proto::v1::Task::Translate => {
            if !info.multilingual {
                return Err(RequestError::invalid(
                    format!("{field}.task"),
                    format!(
                        "model {} is English-only; translation needs a multilingual model",
                        info.name
                    ),
                ));
            }
            true
        }
        _ => false,
    };
    if config.enable_separate_recognition_per_channel {
        return Err(RequestError::invalid(
            format!("{field}.enable_separate_recognition_per_channel"),
            "not supported: channels are averaged to mono",
        ));
    }
    if config.profanity_filter {
        return Err(RequestError::invalid(
            format!("{field}.profanity_filter"),
            "not supported",
        ));
    }
    if config.max_alternatives < 0 {
        return Err(RequestError::invalid(
            format!("{field}.max_alternatives"),
            "must not be negative",
        ));
    }
    let mut prompt = config.prompt.trim().to_owned();
    for phrase in config.speech_contexts.iter().flat_map(|c| c.phrases.iter()) {
        if !phrase.trim().is_empty() {
            if !prompt.is_empty() {
                prompt.push_str(", ");
            }
            prompt.push_str(phrase.trim());
        }
    }
    let no_speech_threshold = match config
        .decoding_options
        .as_ref()
        .and_then(|d| d.no_speech_threshold)
    {
        Some(t) if !(0.0..=1.0).contains(&t) => {
            return Err(RequestError::invalid(
                format!("{field}.decoding_options.no_speech_threshold"),
                "must be in [0, 1]",
            ));
        }
        other => other,
    };
    Ok(Recognition {
        model,
        model_name: info.name.clone(),
        language,
        translate,
        prompt: (!prompt.is_empty()).then_some(prompt),
        words: WordOptions {
            offsets: config.enable_word_time_offsets,
            confidence: config.enable_word_confidence,
            base: Duration::ZERO,
        },
        no_speech_threshold,
        condition_on_previous_text: config
            .decoding_options
            .as_ref()
            .and_then(|d| d.condition_on_previous_text),
    })
}

/// What a StreamingRecognize config asks of its stream.
pub(crate) struct StreamSetup {
    /// The streaming policy's settings.
    pub policy: PolicyConfig,
    /// The audio the client sends.
    pub format: RawFormat,
    /// What the pipeline reports and how.
    pub pipeline: PipelineConfig,
}

/// Validates the first message's config against the server's settings and models.
pub(crate) fn stream_setup(
    server: &ServerConfig,
    config: StreamingRecognitionConfig,
    models: &[ModelInfo],
    door: &'static str,
) -> Result<StreamSetup, RequestError> {
    const F: &str = "streaming_config";
    let recognition_config = config
        .config
        .as_ref()
        .ok_or_else(|| RequestError::invalid(format!("{F}.config"), "config is required"))?;
    let recognition = parse_recognition(recognition_config, &format!("{F}.config"), models)?;
    let format = RawFormat::from_proto(
        recognition_config.audio_format.as_ref(),
        &format!("{F}.config.audio_format"),
    )?;

    let mut policy = PolicyConfig {
        language: recognition.language.clone(),
        translate: recognition.translate,
        initial_prompt: recognition.prompt.clone(),
        interim_results: config.interim_results,
        ..server.stream_policy()
    };
    policy.prompt_max_chars = match recognition.condition_on_previous_text {
        Some(true) if server.prompt_history == 0 => DEFAULT_PROMPT_MAX_CHARS,
        Some(true) | None => server.prompt_history,
        Some(false) => 0,
    };
    let duration = |d: &Option<prost_types::Duration>,
                    field: &str|
     -> Result<Option<Duration>, RequestError> {
        match d {
            None => Ok(None),
            Some(d) => std_duration(d).map(Some).ok_or_else(|| {
                RequestError::invalid(format!("{F}.{field}"), "must be a non-negative duration")
            }),
        }
    };
    if let Some(interval) = duration(&config.interim_results_interval, "interim_results_interval")?
    {
        policy.step_samples = seconds_to_samples(interval.as_secs_f64());
        policy.max_step_samples = policy.max_step_samples.max(policy.step_samples);
    }
    if let Some(ep) = &config.endpointing_config {
        if let Some(s) = duration(
            &ep.min_silence_duration,
            "endpointing_config.min_silence_duration",
        )? {
            policy
                .vad
                .set_end_silence(seconds_to_samples(s.as_secs_f64()));
        }
        if let Some(m) = duration(
            &ep.max_utterance_duration,
            "endpointing_config.max_utterance_duration",
        )? {
            policy.max_utterance_samples = seconds_to_samples(m.as_secs_f64());
            policy.min_partial_samples =
                policy.min_partial_samples.min(policy.max_utterance_samples);
        }
        if let Some(p) = duration(&ep.speech_pad, "endpointing_config.speech_pad")? {
            policy.vad.pre_roll_samples = seconds_to_samples(p.as_secs_f64());
        }
        if let Some(t) = ep.vad_threshold {
            if !(0.0..=1.0).contains(&t) {
                return Err(RequestError::invalid(
                    format!("{F}.endpointing_config.vad_threshold"),
                    "must be in [0, 1]",
                ));
            }
            // Our VAD is energy-based: the threshold scales its margin over the noise floor
            // (0.25 is the default 10 dB; 1.0 is 40 dB, the most conservative).
            policy.vad.snr_db = t * VAD_MAX_SNR_DB;
        }
    }
    if let Some(t) = recognition.no_speech_threshold {
        policy.no_speech_threshold = t;
    }
    policy.validate().map_err(|e| config_violation(&e))?;
    let base =
        duration(&config.stream_start_offset, "stream_start_offset")?.unwrap_or(Duration::ZERO);
    if config.voice_activity_timeout.is_some() {
        return Err(RequestError::invalid(
            format!("{F}.voice_activity_timeout"),
            "not supported yet; the server's idle timeout applies",
        ));
    }
    Ok(StreamSetup {
        pipeline: PipelineConfig {
            model: recognition.model,
            words: WordOptions {
                base,
                ..recognition.words
            },
            interim_results: policy.interim_results,
            speech_events: config.enable_voice_activity_events,
            single_utterance: config.single_utterance,
            config_field: format!("{F}.config"),
            door,
        },
        policy,
        format,
    })
}

/// The VAD margin that `vad_threshold = 1.0` maps to (the VAD's largest accepted SNR).
const VAD_MAX_SNR_DB: f32 = 40.0;

/// A policy setting the client's values made invalid, as a field violation.
pub(crate) fn config_violation(error: &ConfigError) -> RequestError {
    let field = match error {
        ConfigError::OutOfRange { field, .. } | ConfigError::Inconsistent { field, .. } => *field,
    };
    let request_field = match field {
        "step_samples" | "max_step_samples" => "streaming_config.interim_results_interval",
        "end_silence_samples" | "post_roll_samples" => {
            "streaming_config.endpointing_config.min_silence_duration"
        }
        "max_utterance_samples" | "min_partial_samples" => {
            "streaming_config.endpointing_config.max_utterance_duration"
        }
        "pre_roll_samples" => "streaming_config.endpointing_config.speech_pad",
        "snr_db" => "streaming_config.endpointing_config.vad_threshold",
        "no_speech_threshold" => "streaming_config.config.decoding_options.no_speech_threshold",
        _ => "streaming_config",
    };
    RequestError::invalid(request_field, error.to_string())
}

/// The policy and pipeline settings of a caption source: the server's flags, interim
/// results and voice activity events on (subscribers choose), the default model and its
/// language, every word detail.
pub(crate) fn source_setup(
    server: &ServerConfig,
    models: &[ModelInfo],
) -> Result<(PolicyConfig, PipelineConfig), RequestError> {
    const FIELD: &str = "source";
    let recognition = parse_recognition(&RecognitionConfig::default(), FIELD, models)?;
    let mut policy = PolicyConfig {
        language: recognition.language.clone(),
        translate: recognition.translate,
        interim_results: true,
        ..server.stream_policy()
    };
    policy.prompt_max_chars = server.prompt_history;
    let pipeline = PipelineConfig {
        model: recognition.model,
        words: WordOptions {
            offsets: true,
            confidence: true,
            base: Duration::ZERO,
        },
        interim_results: true,
        speech_events: true,
        single_utterance: false,
        config_field: FIELD.to_owned(),
        door: "source",
    };
    Ok((policy, pipeline))
}
