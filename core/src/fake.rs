//! [`ScriptedTranscriber`]: a fake engine that "hears" a script of timed words, so the
//! streaming policy and the transport can be tested in milliseconds without a model.
//!
//! A [`Script`] lists words with their times in the stream; [`Script::render`] makes audio
//! for it (a vowel-like buzz during each word, a faint dither elsewhere) that the VAD
//! treats as speech and silence. The transcriber finds where a buffer it is given lies in
//! that audio (a fingerprint of its samples, robust to a 16-bit PCM round trip), and
//! returns the script's words that lie wholly inside the buffer, with times relative to
//! the buffer, as Whisper would. On partial decodes (`single_segment`) the last
//! `unstable_tail` words come out garbled, differently on every call, so that
//! LocalAgreement has something to disagree about. [`Fault`]s script failures,
//! hallucinations and repetition loops on chosen calls.
//!
//! # Example
//! ```
//! use transcribe_core::fake::{Script, ScriptedTranscriber};
//! use transcribe_core::{DecodeOptions, Transcriber};
//! let script = Script::from_phrases(&[(0.5, "hello there world")], 0.4, 0.1)?;
//! let audio = script.render(3.0);
//! let mut fake = ScriptedTranscriber::new(script, &audio);
//! let t = fake.transcribe(&audio[8_000..], &DecodeOptions::default())?;
//! assert_eq!(t.text(), "hello there world");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::HashMap;

use crate::audio::{SAMPLE_RATE, samples_to_seconds, seconds_to_samples};
use crate::engine::{DecodeOptions, EngineError, FailureKind, Transcriber};
use crate::transcript::{Segment, Transcript, Word, join_texts};
use crate::vad::ConfigError;

/// Rendered audio lies on a grid of 1/1024 (about -60 dBFS steps), so that a 16-bit PCM
/// round trip (exact multiples of 32 LSB) leaves every sample's grid value unchanged.
const GRID: f32 = 1024.0;

/// Samples per fingerprint.
const FINGERPRINT_LEN: usize = 32;

/// Fingerprints are indexed every 16 samples; a lookup tries 16 shifts.
const FINGERPRINT_STRIDE: usize = 16;

/// Samples compared to confirm a fingerprint match.
const VERIFY_LEN: usize = 1_024;

/// A word may start this much before the buffer and still count as inside it (seconds).
const START_TOLERANCE: f64 = 0.02;

/// RMS level of rendered words: -20 dBFS.
const WORD_LEVEL: f32 = 0.1;

/// Attack and release of a rendered word: 20 ms.
const RAMP_SAMPLES: usize = 320;

/// Suffixes that garble unstable words; consecutive calls use different ones.
const GARBLE_SUFFIXES: [&str; 4] = ["ish", "ed", "ly", "er"];

/// One word of a script: its text and its time in the stream (seconds).
#[derive(Clone, Debug, PartialEq)]
pub struct ScriptWord {
    /// The word as the fake engine will spell it.
    pub text: String,
    /// Start in seconds from the stream's first sample.
    pub start: f64,
    /// End in seconds.
    pub end: f64,
}

/// What is said when: words in time order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Script {
    words: Vec<ScriptWord>,
}

impl Script {
    /// A script from words.
    ///
    /// # Errors
    /// [`ConfigError::Inconsistent`] when a word is empty, ends before it starts, starts
    /// before 0 or overlaps the previous word.
    pub fn new(words: Vec<ScriptWord>) -> Result<Self, ConfigError> {
        let mut prev_end = 0.0;
        for w in &words {
            let bad = if w.text.trim().is_empty() {
                Some("empty word")
            } else if !(w.start >= prev_end && w.end > w.start && w.end.is_finite()) {
                Some("words must have start < end, in order, without overlap")
            } else {
                None
            };
            if let Some(reason) = bad {
                return Err(ConfigError::Inconsistent {
                    field: "script",
                    reason: format!("{reason}: {w:?}"),
                });
            }
            prev_end = w.end;
        }
        Ok(Self { words })
    }

    /// A script of phrases: each `(start_seconds, text)` laid out word by word from its
    /// start, each word lasting `word_seconds` with `gap_seconds` between words.
    ///
    /// # Errors
    /// As [`Script::new`], e.g. when phrases overlap.
    pub fn from_phrases(
        phrases: &[(f64, &str)],
        word_seconds: f64,
        gap_seconds: f64,
    ) -> Result<Self, ConfigError> {
        let mut words = Vec::new();
        for &(start, text) in phrases {
            let mut t = start;
            for piece in text.split_whitespace() {
                words.push(ScriptWord {
                    text: piece.to_string(),
                    start: t,
                    end: t + word_seconds,
                });
                t += word_seconds + gap_seconds;
            }
        }
        Self::new(words)
    }

    /// The words.
    pub fn words(&self) -> &[ScriptWord] {
        &self.words
    }

    /// All words joined by spaces.
    pub fn text(&self) -> String {
        join_texts(self.words.iter().map(|w| w.text.as_str()))
    }

    /// Audio for the script, at least `seconds` long (longer if the words go on): each
    /// word a vowel-like buzz at -20 dBFS (a pulse train through three formant resonators),
    /// the rest a dither at about -62 dBFS; every sample on a 1/1024 grid.
    pub fn render(&self, seconds: f64) -> Vec<f32> {
        let last = self.words.last().map_or(0.0, |w| w.end);
        let n = seconds_to_samples(seconds.max(last));
        let mut out = vec![0f32; n];
        for (i, w) in self.words.iter().enumerate() {
            let (a, b) = (
                seconds_to_samples(w.start).min(n),
                seconds_to_samples(w.end).min(n),
            );
            let buzz = vowel(i, b - a);
            out[a..b].copy_from_slice(&buzz);
        }
        let mut rng = SplitMix(0x5EED);
        for x in &mut out {
            let dither = (rng.next() % 3) as f32 - 1.0;
            *x = (((*x * GRID).round() + dither).clamp(-GRID + 1.0, GRID - 1.0)) / GRID;
        }
        out
    }
}

/// A vowel-like sound for word `i`: pulse train at a per-word pitch through formant
/// resonators, with 20 ms ramps, at [`WORD_LEVEL`] RMS.
fn vowel(i: usize, len: usize) -> Vec<f32> {
    let sr = SAMPLE_RATE as f32;
    let f0 = 100.0 + 15.0 * (i % 6) as f32;
    let formants = [
        (400.0 + (i * 137 % 400) as f32, 90.0),
        (1200.0 + (i * 311 % 1000) as f32, 120.0),
        (2600.0, 160.0),
    ];
    let coeffs: Vec<(f32, f32)> = formants
        .iter()
        .map(|&(f, bw)| {
            let r = (-std::f32::consts::PI * bw / sr).exp();
            (2.0 * r * (std::f32::consts::TAU * f / sr).cos(), -r * r)
        })
        .collect();
    let mut state = vec![(0f32, 0f32); coeffs.len()];
    let mut phase = 0.0f32;
    let mut out = Vec::with_capacity(len);
    for _ in 0..len {
        phase += f0 / sr;
        let pulse = if phase >= 1.0 {
            phase -= 1.0;
            1.0
        } else {
            0.0
        };
        let mut y = 0.0;
        for ((a1, a2), (y1, y2)) in coeffs.iter().zip(state.iter_mut()) {
            let v = pulse + a1 * *y1 + a2 * *y2;
            *y2 = *y1;
            *y1 = v;
            y += v;
        }
        out.push(y);
    }
    let rms = (out.iter().map(|v| v * v).sum::<f32>() / len.max(1) as f32).sqrt();
    let gain = if rms > 0.0 { WORD_LEVEL / rms } else { 0.0 };
    for (k, v) in out.iter_mut().enumerate() {
        let edge = k.min(len - 1 - k);
        let ramp = if edge < RAMP_SAMPLES {
            0.5 - 0.5 * (std::f32::consts::PI * edge as f32 / RAMP_SAMPLES as f32).cos()
        } else {
            1.0
        };
        *v *= gain * ramp;
    }
    out
}

/// A deterministic generator (SplitMix64).
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// Which calls a [`Fault`] applies to.
#[derive(Clone, Debug, PartialEq)]
pub enum When {
    /// The n-th call (0-based), partial or final.
    Call(usize),
    /// The n-th final call (0-based; a call without `single_segment`).
    FinalCall(usize),
    /// Every final call.
    EveryFinal,
    /// Every partial call (`single_segment`).
    EveryPartial,
    /// Every call.
    EveryCall,
    /// Every call whose buffer holds no script word (silence, noise).
    NoWords,
    /// Every call whose prompt contains this text: selects one stream's calls among many
    /// on a shared engine (its client sets the prompt).
    PromptContains(String),
}

/// A scripted misbehaviour.
#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    /// Fail with this kind of [`EngineError`].
    Fail(FailureKind),
    /// Return this text instead of the script's words (a hallucination), as one segment
    /// with these scores.
    Text {
        /// The text.
        text: String,
        /// The segment's `no_speech_prob`.
        no_speech_prob: f32,
        /// The segment's `avg_logprob`.
        avg_logprob: f32,
    },
    /// Append `phrase` `repeats` times after the script's words (a repetition loop).
    Loop {
        /// The repeated phrase.
        phrase: String,
        /// How many times.
        repeats: usize,
    },
    /// Return no segments.
    Empty,
    /// Panic, as an engine with a bug would: for tests of panic isolation (the server's
    /// workers catch it and fail only the job).
    Panic,
}

/// What one call looked like.
#[derive(Clone, Debug, PartialEq)]
pub struct CallRecord {
    /// Where the buffer was found in the script audio (`None`: not found).
    pub offset_samples: Option<u64>,
    /// Buffer length in samples.
    pub len: usize,
    /// The options passed.
    pub options: DecodeOptions,
}

/// The fake engine. See the module documentation.
#[derive(Clone, Debug)]
pub struct ScriptedTranscriber {
    script: Script,
    audio: Vec<i32>,
    index: HashMap<u64, Vec<usize>>,
    unstable_tail: usize,
    faults: Vec<(When, Fault)>,
    calls: Vec<CallRecord>,
    final_calls: usize,
}

impl ScriptedTranscriber {
    /// A fake that hears `script` in `audio` (normally `script.render(..)`; any audio whose
    /// 32-sample stretches are unique on a 1/1024 grid works).
    pub fn new(script: Script, audio: &[f32]) -> Self {
        let audio: Vec<i32> = audio.iter().map(|&x| quantize(x)).collect();
        let mut index: HashMap<u64, Vec<usize>> = HashMap::new();
        let mut p = 0;
        while p + FINGERPRINT_LEN <= audio.len() {
            index
                .entry(fingerprint(&audio[p..p + FINGERPRINT_LEN]))
                .or_default()
                .push(p);
            p += FINGERPRINT_STRIDE;
        }
        Self {
            script,
            audio,
            index,
            unstable_tail: 0,
            faults: Vec::new(),
            calls: Vec::new(),
            final_calls: 0,
        }
    }

    /// Garbles the last `words` words of every partial hypothesis (default 0).
    pub fn with_unstable_tail(mut self, words: usize) -> Self {
        self.unstable_tail = words;
        self
    }

    /// Adds a fault; the first matching fault of a call applies.
    pub fn with_fault(mut self, when: When, fault: Fault) -> Self {
        self.faults.push((when, fault));
        self
    }

    /// The script.
    pub fn script(&self) -> &Script {
        &self.script
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> &[CallRecord] {
        &self.calls
    }

    /// Where `samples` start in the script audio, if they come from it.
    pub fn locate(&self, samples: &[f32]) -> Option<u64> {
        if samples.len() < FINGERPRINT_LEN + FINGERPRINT_STRIDE {
            return None;
        }
        let q: Vec<i32> = samples
            .iter()
            .take(VERIFY_LEN.max(FINGERPRINT_LEN + FINGERPRINT_STRIDE))
            .map(|&x| quantize(x))
            .collect();
        for shift in 0..FINGERPRINT_STRIDE {
            let key = fingerprint(&q[shift..shift + FINGERPRINT_LEN]);
            for &p in self.index.get(&key).into_iter().flatten() {
                let Some(start) = p.checked_sub(shift) else {
                    continue;
                };
                let end = start + q.len();
                if self.audio.get(start..end) == Some(&q[..]) {
                    return Some(start as u64);
                }
            }
        }
        None
    }

    fn fault_for(
        &self,
        call: usize,
        final_call: Option<usize>,
        no_words: bool,
        prompt: Option<&str>,
    ) -> Option<Fault> {
        self.faults.iter().find_map(|(when, fault)| {
            let hit = match when {
                When::Call(n) => *n == call,
                When::FinalCall(n) => final_call == Some(*n),
                When::EveryFinal => final_call.is_some(),
                When::EveryPartial => final_call.is_none(),
                When::EveryCall => true,
                When::NoWords => no_words,
                When::PromptContains(text) => prompt.is_some_and(|p| p.contains(text.as_str())),
            };
            hit.then(|| fault.clone())
        })
    }
}

fn quantize(x: f32) -> i32 {
    (x * GRID).round() as i32
}

/// FNV-1a over the values.
fn fingerprint(values: &[i32]) -> u64 {
    values.iter().fold(0xcbf2_9ce4_8422_2325, |h, &v| {
        (h ^ (v as u32 as u64)).wrapping_mul(0x0000_0100_0000_01B3)
    })
}

/// One segment holding `words` (times relative to the buffer).
fn segment(words: Vec<Word>, no_speech_prob: f32, avg_logprob: f32) -> Segment {
    Segment {
        start: words.first().map_or(0.0, |w| w.start),
        end: words.last().map_or(0.0, |w| w.end),
        text: join_texts(words.iter().map(|w| w.text.as_str())),
        words,
        no_speech_prob,
        avg_logprob,
    }
}

/// Scores of a normal segment.
const NORMAL_NO_SPEECH: f32 = 0.02;
const NORMAL_LOGPROB: f32 = -0.25;

impl Transcriber for ScriptedTranscriber {
    fn transcribe(
        &mut self,
        samples: &[f32],
        options: &DecodeOptions,
    ) -> Result<Transcript, EngineError> {
        let call = self.calls.len();
        let partial = options.single_segment;
        let final_call = (!partial).then(|| {
            self.final_calls += 1;
            self.final_calls - 1
        });
        let offset = self.locate(samples);
        self.calls.push(CallRecord {
            offset_samples: offset,
            len: samples.len(),
            options: options.clone(),
        });
        let offset = offset.ok_or_else(|| {
            EngineError::Inference("scripted transcriber: buffer not found in its audio".into())
        })?;
        let b0 = samples_to_seconds(offset as usize);
        let b1 = samples_to_seconds(offset as usize + samples.len());
        let mut words: Vec<Word> = self
            .script
            .words
            .iter()
            .filter(|w| w.start >= b0 - START_TOLERANCE && w.end <= b1 + 1e-9)
            .map(|w| Word {
                text: w.text.clone(),
                start: (w.start - b0).max(0.0),
                end: w.end - b0,
                probability: 0.9,
            })
            .collect();
        let language = options.language.clone().or_else(|| Some("en".into()));
        let duration = b1 - b0;
        match self.fault_for(
            call,
            final_call,
            words.is_empty(),
            options.prompt.as_deref(),
        ) {
            Some(Fault::Fail(kind)) => {
                let message = format!("scripted failure on call {call}");
                return Err(match kind {
                    FailureKind::Cancelled => EngineError::Cancelled,
                    FailureKind::InvalidOptions => EngineError::InvalidOptions(message),
                    FailureKind::Inference => EngineError::Inference(message),
                });
            }
            Some(Fault::Panic) => panic!("scripted panic on call {call}"),
            Some(Fault::Empty) => {
                return Ok(Transcript {
                    segments: vec![],
                    language,
                });
            }
            Some(Fault::Text {
                text,
                no_speech_prob,
                avg_logprob,
            }) => {
                let pieces: Vec<&str> = text.split_whitespace().collect();
                let d = duration / pieces.len().max(1) as f64;
                let words = pieces
                    .iter()
                    .enumerate()
                    .map(|(i, p)| Word {
                        text: (*p).to_string(),
                        start: i as f64 * d,
                        end: (i + 1) as f64 * d,
                        probability: 0.5,
                    })
                    .collect();
                return Ok(Transcript {
                    segments: vec![segment(words, no_speech_prob, avg_logprob)],
                    language,
                });
            }
            Some(Fault::Loop { phrase, repeats }) => {
                let mut t = words.last().map_or(0.0, |w| w.end);
                for _ in 0..repeats {
                    for p in phrase.split_whitespace() {
                        let end = (t + 0.2).min(duration);
                        words.push(Word {
                            text: p.to_string(),
                            start: t.min(end),
                            end,
                            probability: 0.4,
                        });
                        t = end;
                    }
                }
            }
            None => {}
        }
        if partial && self.unstable_tail > 0 {
            let from = words.len().saturating_sub(self.unstable_tail);
            let suffix = GARBLE_SUFFIXES[call % GARBLE_SUFFIXES.len()];
            for w in &mut words[from..] {
                let stem = w.text.trim_end_matches(|c: char| !c.is_alphanumeric());
                w.text = format!("{stem}{suffix}");
            }
        }
        let segments = if words.is_empty() {
            vec![]
        } else {
            vec![segment(words, NORMAL_NO_SPEECH, NORMAL_LOGPROB)]
        };
        Ok(Transcript { segments, language })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn partial() -> DecodeOptions {
        DecodeOptions {
            single_segment: true,
            ..DecodeOptions::default()
        }
    }

    fn script() -> Result<Script, ConfigError> {
        Script::from_phrases(&[(1.0, "one two three four"), (4.0, "five six")], 0.3, 0.1)
    }

    #[test]
    fn scripts_are_validated() {
        assert!(Script::from_phrases(&[(1.0, "a b c"), (1.5, "d")], 0.3, 0.1).is_err());
        let empty = ScriptWord {
            text: " ".into(),
            start: 0.0,
            end: 1.0,
        };
        assert!(Script::new(vec![empty]).is_err());
    }

    #[test]
    fn buffers_are_located_even_after_a_pcm16_round_trip() -> TestResult {
        let s = script()?;
        let audio = s.render(6.0);
        let fake = ScriptedTranscriber::new(s, &audio);
        for start in [0usize, 1, 17, 4_800, 33_333, 60_000] {
            let buf = &audio[start..start + 8_000];
            assert_eq!(fake.locate(buf), Some(start as u64), "start {start}");
            let pcm: Vec<f32> = buf
                .iter()
                .map(|&x| f32::from((x * 32_767.0).round() as i16) / 32_768.0)
                .collect();
            assert_eq!(fake.locate(&pcm), Some(start as u64), "pcm16 start {start}");
        }
        assert_eq!(fake.locate(&vec![0.5; 4_000]), None);
        Ok(())
    }

    #[test]
    fn returns_words_inside_the_buffer_relative_to_it() -> TestResult {
        let s = script()?;
        let audio = s.render(6.0);
        let mut fake = ScriptedTranscriber::new(s, &audio);
        // 0.9 s .. 2.5 s holds all four words (four ends at 2.5 s); 0.9 .. 2.375 s three.
        let t = fake.transcribe(&audio[14_400..40_000], &DecodeOptions::default())?;
        assert_eq!(t.text(), "one two three four");
        let first = t.words().next().ok_or("no words")?;
        assert!((first.start - 0.1).abs() < 1e-6 && (first.end - 0.4).abs() < 1e-6);
        let t = fake.transcribe(&audio[14_400..38_000], &DecodeOptions::default())?;
        assert_eq!(t.text(), "one two three");
        // A word that started before the buffer is not heard.
        let t = fake.transcribe(&audio[17_000..], &DecodeOptions::default())?;
        assert_eq!(t.text(), "two three four five six");
        assert_eq!(fake.calls().len(), 3);
        assert_eq!(fake.calls()[2].offset_samples, Some(17_000));
        Ok(())
    }

    #[test]
    fn partials_garble_the_unstable_tail_differently_each_call() -> TestResult {
        let s = script()?;
        let audio = s.render(6.0);
        let mut fake = ScriptedTranscriber::new(s, &audio).with_unstable_tail(2);
        let a = fake.transcribe(&audio[..48_000], &partial())?.text();
        let b = fake.transcribe(&audio[..48_000], &partial())?.text();
        assert!(
            a.starts_with("one two ") && b.starts_with("one two "),
            "{a} / {b}"
        );
        assert_ne!(a, b);
        let f = fake.transcribe(&audio[..48_000], &DecodeOptions::default())?;
        assert_eq!(f.text(), "one two three four");
        Ok(())
    }

    #[test]
    fn faults_apply_to_their_calls() -> TestResult {
        let s = script()?;
        let audio = s.render(6.0);
        let mut fake = ScriptedTranscriber::new(s, &audio)
            .with_fault(When::Call(0), Fault::Fail(FailureKind::Inference))
            .with_fault(
                When::FinalCall(1),
                Fault::Loop {
                    phrase: "la".into(),
                    repeats: 5,
                },
            )
            .with_fault(
                When::NoWords,
                Fault::Text {
                    text: "Thank you.".into(),
                    no_speech_prob: 0.9,
                    avg_logprob: -1.2,
                },
            );
        let full = DecodeOptions::default();
        assert!(matches!(
            fake.transcribe(&audio, &full),
            Err(EngineError::Inference(_))
        ));
        let t = fake.transcribe(&audio[..48_000], &full)?;
        assert_eq!(t.text(), "one two three four la la la la la");
        let t = fake.transcribe(&audio[..48_000], &full)?;
        assert_eq!(t.text(), "one two three four");
        let t = fake.transcribe(&audio[..12_000], &full)?;
        assert_eq!(t.text(), "Thank you.");
        assert_eq!(t.segments[0].no_speech_prob, 0.9);
        Ok(())
    }

    #[test]
    fn a_panic_fault_panics_on_its_call_only() -> TestResult {
        let s = script()?;
        let audio = s.render(6.0);
        let mut fake = ScriptedTranscriber::new(s, &audio)
            .with_fault(When::Call(1), Fault::Panic)
            .with_fault(
                When::PromptContains("fail".into()),
                Fault::Fail(FailureKind::Inference),
            );
        let full = DecodeOptions::default();
        assert_eq!(
            fake.transcribe(&audio[..48_000], &full)?.text(),
            "one two three four"
        );
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _ = fake.transcribe(&audio[..48_000], &full);
        }));
        assert!(caught.is_err(), "call 1 panics");
        assert_eq!(
            fake.transcribe(&audio[..48_000], &full)?.text(),
            "one two three four"
        );
        let failing = DecodeOptions {
            prompt: Some("please fail".into()),
            ..DecodeOptions::default()
        };
        assert!(matches!(
            fake.transcribe(&audio[..48_000], &failing),
            Err(EngineError::Inference(_))
        ));
        assert_eq!(
            fake.transcribe(&audio[..48_000], &full)?.text(),
            "one two three four"
        );
        Ok(())
    }
}
