//! Unit tests of the streaming policy: direct hypotheses for the commit rules, the scripted
//! fake through [`super::stream`] for everything else. Times are in samples (16 kHz).

use super::stream::{StreamRun, run_stream, run_stream_timed};
use super::*;
use crate::engine::Transcriber;
use crate::fake::{Fault, Script, ScriptedTranscriber, When};
use crate::transcript::Segment;
use crate::vad::tests::{pink_noise, white_noise};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const SR: u64 = crate::audio::SAMPLE_RATE as u64;

fn ms(ms: u64) -> u64 {
    ms * SR / 1000
}

/// Continuous rendered speech (0.4 s words, 0.1 s gaps) from 0.5 s to `seconds`.
fn speech_audio(seconds: f64) -> Result<Vec<f32>, ConfigError> {
    let n = ((seconds - 0.5) / 0.5) as usize;
    let words: Vec<String> = (0..n).map(|i| format!("w{i}")).collect();
    let script = Script::from_phrases(&[(0.5, &words.join(" "))], 0.4, 0.1)?;
    Ok(script.render(seconds))
}

/// A transcript of `text`, word `i` at 0.1 + 0.3 i .. +0.25 s (relative to the buffer).
fn hyp(text: &str) -> Transcript {
    let words: Vec<Word> = text
        .split_whitespace()
        .enumerate()
        .map(|(i, t)| Word {
            text: t.into(),
            start: 0.1 + 0.3 * i as f64,
            end: 0.35 + 0.3 * i as f64,
            probability: 0.9,
        })
        .collect();
    Transcript {
        segments: vec![Segment {
            start: 0.0,
            end: words.last().map_or(0.0, |w| w.end),
            text: text.into(),
            words,
            no_speech_prob: 0.01,
            avg_logprob: -0.2,
        }],
        language: Some("en".into()),
    }
}

/// Drives a policy by hand over continuous speech.
struct Harness {
    policy: StreamingPolicy,
    audio: Vec<f32>,
    pos: usize,
    events: Vec<PolicyEvent>,
}

impl Harness {
    fn new(config: PolicyConfig) -> Result<Self, ConfigError> {
        Ok(Self {
            policy: StreamingPolicy::new(config)?,
            audio: speech_audio(40.0)?,
            pos: 0,
            events: Vec::new(),
        })
    }

    fn push(&mut self, n: usize) {
        let end = (self.pos + n).min(self.audio.len());
        let events = self.policy.push_audio(&self.audio[self.pos..end]);
        self.events.extend(events);
        self.pos = end;
    }

    /// Pushes audio 20 ms at a time until a job is due.
    fn next_job(&mut self) -> Result<DecodeJob, String> {
        for _ in 0..2_000 {
            if let Some(job) = self.policy.poll_job() {
                return Ok(job);
            }
            self.push(320);
        }
        Err("no job became due".into())
    }

    fn answer(&mut self, job: &DecodeJob, transcript: Transcript) -> Vec<PolicyEvent> {
        let events = self.policy.on_result(job.id, Ok(transcript));
        self.events.extend(events.clone());
        events
    }

    /// Answers partials with `partial(seconds of the job's audio)` until the policy asks
    /// for a final (at most 20 jobs), and returns that final's job unanswered.
    fn partials_until_final(
        &mut self,
        partial: impl Fn(f64) -> Transcript,
    ) -> Result<DecodeJob, String> {
        for _ in 0..20 {
            let job = self.next_job()?;
            if job.kind == JobKind::Final {
                return Ok(job);
            }
            self.answer(&job, partial(job.samples.len() as f64 / SR as f64));
        }
        Err("no final job within 20 jobs".into())
    }
}

fn interim_texts(events: &[PolicyEvent]) -> Vec<(String, String)> {
    events
        .iter()
        .filter_map(|e| match e {
            PolicyEvent::Interim {
                committed, tail, ..
            } => Some((committed.clone(), tail.clone())),
            _ => None,
        })
        .collect()
}

#[derive(Clone, Debug, PartialEq)]
struct FinalView {
    index: u64,
    text: String,
    start: u64,
    end: u64,
    reason: EndReason,
    words: Vec<Word>,
}

fn finals(events: &[PolicyEvent]) -> Vec<FinalView> {
    events
        .iter()
        .filter_map(|e| match e {
            PolicyEvent::Final {
                utterance_index,
                text,
                words,
                start_samples,
                end_samples,
                reason,
                ..
            } => Some(FinalView {
                index: *utterance_index,
                text: text.clone(),
                start: *start_samples,
                end: *end_samples,
                reason: *reason,
                words: words.clone(),
            }),
            _ => None,
        })
        .collect()
}

fn final_texts(events: &[PolicyEvent]) -> Vec<String> {
    finals(events).into_iter().map(|f| f.text).collect()
}

fn fake_for(
    phrases: &[(f64, &str)],
    seconds: f64,
) -> Result<(ScriptedTranscriber, Vec<f32>), ConfigError> {
    let script = Script::from_phrases(phrases, 0.4, 0.1)?;
    let audio = script.render(seconds);
    Ok((ScriptedTranscriber::new(script, &audio), audio))
}

// ---- commit rules (LocalAgreement-2) ----

#[test]
fn commit_rules() -> TestResult {
    // Each case: successive partial hypotheses and the (committed, tail) after each.
    type Case<'a> = (&'a str, &'a [&'a str], &'a [(&'a str, &'a str)]);
    let cases: &[Case<'_>] = &[
        (
            "agreement commits the common prefix",
            &["a b", "a b c", "a b c d"],
            &[("", "a b"), ("a b", "c"), ("a b c", "d")],
        ),
        (
            "disagreement commits nothing",
            &["a b", "x y", "p q r"],
            &[("", "a b"), ("", "x y"), ("", "p q r")],
        ),
        (
            "committed text is never retracted",
            &["a b c", "a b c d", "a x"],
            &[("", "a b c"), ("a b c", "d"), ("a b c", "")],
        ),
        (
            "normalised comparison keeps the newer spelling",
            &[
                "Hello, world",
                "hello world! again",
                "hello world again, yes",
            ],
            &[
                ("", "Hello, world"),
                ("hello world!", "again"),
                ("hello world! again,", "yes"),
            ],
        ),
        (
            "only words beyond the committed ones are compared",
            &["a b", "a b c", "a b d", "a b d e"],
            &[("", "a b"), ("a b", "c"), ("a b", "d"), ("a b d", "e")],
        ),
    ];
    for (name, hypotheses, want) in cases {
        let mut h = Harness::new(PolicyConfig::default())?;
        let mut got = Vec::new();
        for text in *hypotheses {
            let job = h.next_job()?;
            assert_eq!(job.kind, JobKind::Partial, "{name}");
            got.extend(interim_texts(&h.answer(&job, hyp(text))));
        }
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(c, t)| ((*c).to_string(), (*t).to_string()))
            .collect();
        assert_eq!(got, want, "{name}");
    }
    Ok(())
}

#[test]
fn partials_carry_the_committed_words_as_prefix_when_asked() -> TestResult {
    for on in [false, true] {
        let mut h = Harness::new(PolicyConfig {
            partial_prefix: on,
            ..PolicyConfig::default()
        })?;
        let mut prefixes = Vec::new();
        for text in [
            "Hello, world",
            "hello world! again",
            "hello world! again, yes",
        ] {
            let job = h.next_job()?;
            assert_eq!(job.kind, JobKind::Partial);
            prefixes.push(job.options.prefix.clone());
            h.answer(&job, hyp(text));
        }
        let want = if on {
            vec![None, None, Some("hello world!".to_string())]
        } else {
            vec![None, None, None]
        };
        assert_eq!(prefixes, want, "partial_prefix {on}");
        // Finals decode the whole utterance, never after a prefix.
        let finals = h.policy.finalize();
        assert!(final_texts(&finals).is_empty());
        let job = h.next_job()?;
        assert_eq!(job.kind, JobKind::Final);
        assert_eq!(job.options.prefix, None);
    }
    Ok(())
}

#[test]
fn partials_decode_at_most_their_token_limit_unless_max_tokens_is_set() -> TestResult {
    assert_eq!(partial_token_limit(1), 24);
    assert_eq!(partial_token_limit(16_000), 24);
    assert_eq!(partial_token_limit(16_001), 32);
    assert_eq!(partial_token_limit(20 * 16_000), 176);
    for (max_tokens, limit, want_partial) in [
        (None, true, |s| Some(partial_token_limit(s))),
        (None, false, |_| None),
        (Some(32), true, |_| Some(32)),
    ]
        as [(Option<u32>, bool, fn(usize) -> Option<u32>); 3]
    {
        let mut h = Harness::new(PolicyConfig {
            max_tokens,
            limit_partial_tokens: limit,
            ..PolicyConfig::default()
        })?;
        for _ in 0..3 {
            let job = h.next_job()?;
            assert_eq!(job.kind, JobKind::Partial);
            assert_eq!(job.options.max_tokens, want_partial(job.samples.len()));
            h.answer(&job, hyp("a b c"));
        }
        let _ = h.policy.finalize();
        let job = h.next_job()?;
        assert_eq!(job.kind, JobKind::Final);
        assert_eq!(job.options.max_tokens, max_tokens, "finals are not limited");
    }
    Ok(())
}

#[test]
fn short_hypotheses_are_shown_but_not_committed() -> TestResult {
    // The first partials mishear the start and agree on it; from 2 s of audio on they hear
    // it right. With `min_commit_samples` the misheard words are never committed.
    let hypotheses = [
        "the codon",
        "the codon is",
        "the cut on his",
        "the cut on his chest",
        "the cut on his chest still",
    ];
    for (min_commit_s, want_misheard) in [(0.0, true), (2.0, false)] {
        let config = PolicyConfig {
            min_commit_samples: (min_commit_s * SR as f64) as usize,
            ..PolicyConfig::default()
        };
        let mut h = Harness::new(config)?;
        let mut committed_texts = Vec::new();
        for text in hypotheses {
            let job = h.next_job()?;
            let covered = job.samples.len() as f64 / SR as f64;
            for (committed, _) in interim_texts(&h.answer(&job, hyp(text))) {
                if covered < min_commit_s {
                    assert_eq!(committed, "", "committed from {covered} s");
                }
                committed_texts.push(committed);
            }
        }
        let misheard = committed_texts.iter().any(|c| c.contains("codon"));
        assert_eq!(
            misheard, want_misheard,
            "{min_commit_s} s: {committed_texts:?}"
        );
        let last = committed_texts.last().cloned().unwrap_or_default();
        assert!(last.ends_with("chest") || last.ends_with("his"), "{last:?}");
    }
    // At most half the maximum utterance applies: long utterances still commit.
    let mut h = Harness::new(PolicyConfig {
        min_commit_samples: 10 * SR as usize,
        max_utterance_samples: 4 * SR as usize,
        ..PolicyConfig::default()
    })?;
    let mut committed = String::new();
    for text in ["a b", "a b c", "a b c d", "a b c d e", "a b c d e f"] {
        let job = h.next_job()?;
        if let Some((c, _)) = interim_texts(&h.answer(&job, hyp(text))).pop() {
            committed = c;
        }
    }
    assert!(!committed.is_empty(), "nothing committed");
    Ok(())
}

#[test]
fn the_final_decode_replaces_committed_words() -> TestResult {
    // Two partials agree on misheard words; the final decode (full window) hears them right.
    // (final decode, final text)
    let table: &[(&str, &str)] = &[
        ("the old dog slept", "the old dog slept"),
        ("you know all don't set", "you know all don't set"),
        // The final decode heard nothing: the committed words stand.
        ("", "you know all"),
    ];
    for &(final_decode, want) in table {
        let mut h = Harness::new(PolicyConfig::default())?;
        for text in ["you know all", "you know all don't"] {
            let job = h.next_job()?;
            assert_eq!(job.kind, JobKind::Partial);
            let _ = h.answer(&job, hyp(text));
        }
        assert_eq!(
            interim_texts(&h.events).last(),
            Some(&("you know all".to_string(), "don't".to_string()))
        );
        let _ = h.policy.finalize();
        let job = h.policy.poll_job().ok_or("no final job")?;
        assert_eq!(job.kind, JobKind::Final);
        let _ = h.answer(&job, hyp(final_decode));
        assert_eq!(final_texts(&h.events), [want], "{final_decode:?}");
    }
    Ok(())
}

#[test]
fn identical_interims_are_not_repeated() -> TestResult {
    let mut h = Harness::new(PolicyConfig::default())?;
    let mut count = 0;
    for _ in 0..3 {
        let job = h.next_job()?;
        count += interim_texts(&h.answer(&job, hyp("same words"))).len();
    }
    // ("", "same words"), then ("same words", ""), then nothing new.
    assert_eq!(count, 2);
    Ok(())
}

#[test]
fn interim_carries_stability_and_audio_end() -> TestResult {
    let mut h = Harness::new(PolicyConfig::default())?;
    let job = h.next_job()?;
    let events = h.answer(&job, hyp("a b"));
    let Some(PolicyEvent::Interim {
        utterance_index,
        stability_committed,
        stability_tail,
        audio_end_samples,
        ..
    }) = events.first()
    else {
        return Err(format!("no interim: {events:?}").into());
    };
    assert_eq!(*utterance_index, 0);
    assert_eq!((*stability_committed, *stability_tail), (0.9, 0.1));
    assert_eq!(*audio_end_samples, job.end_samples());
    Ok(())
}

#[test]
fn stale_or_unknown_results_are_ignored() -> TestResult {
    let mut h = Harness::new(PolicyConfig::default())?;
    let job = h.next_job()?;
    assert!(h.policy.poll_job().is_none(), "only one job in flight");
    assert!(h.policy.on_result(job.id + 7, Ok(hyp("x"))).is_empty());
    assert!(h.policy.has_job_in_flight());
    assert!(!h.answer(&job, hyp("x")).is_empty());
    assert!(h.policy.on_result(job.id, Ok(hyp("x"))).is_empty());
    Ok(())
}

// ---- end to end with the scripted engine ----

#[test]
fn utterances_become_finals_with_absolute_monotonic_word_times() -> TestResult {
    let phrases = [
        (1.0, "the quick brown fox jumps over"),
        (6.0, "the lazy dog"),
        (9.5, "and runs away quickly"),
    ];
    let (fake, audio) = fake_for(&phrases, 14.0)?;
    let fake_script = fake.script().clone();
    let mut fake = fake.with_unstable_tail(2);
    let events = run_stream(&mut fake, &audio, 1_600, PolicyConfig::default())?;
    let got = finals(&events);
    let texts: Vec<&str> = got.iter().map(|f| f.text.as_str()).collect();
    assert_eq!(texts, phrases.map(|p| p.1));
    for (i, f) in got.iter().enumerate() {
        assert_eq!(f.index, i as u64);
        assert_eq!(f.reason, EndReason::Endpoint);
        let (start, end) = (f.start as f64 / SR as f64, f.end as f64 / SR as f64);
        let mut prev = start;
        for w in &f.words {
            assert!(w.start >= prev && w.end >= w.start && w.end <= end, "{f:?}");
            prev = w.end;
            let truth = fake_script
                .words()
                .iter()
                .find(|s| s.text == w.text && (s.start - w.start).abs() < 0.02)
                .ok_or(format!("{w:?} is not at its scripted time"))?;
            assert!((truth.end - w.end).abs() < 0.02);
        }
    }
    // Interims of an utterance never lose committed text, and come before its final.
    let mut committed: HashMap<u64, String> = HashMap::new();
    let mut finished = std::collections::HashSet::new();
    for e in &events {
        match e {
            PolicyEvent::Interim {
                utterance_index,
                committed: c,
                ..
            } => {
                assert!(!finished.contains(utterance_index));
                let before = committed.entry(*utterance_index).or_default();
                assert!(c.starts_with(before.as_str()), "{before:?} -> {c:?}");
                *before = c.clone();
            }
            PolicyEvent::Final {
                utterance_index, ..
            } => {
                finished.insert(*utterance_index);
            }
            _ => {}
        }
    }
    assert!(
        committed.values().any(|c| !c.is_empty()),
        "nothing committed"
    );
    Ok(())
}

use std::collections::HashMap;

#[test]
fn chunk_size_does_not_change_finals() -> TestResult {
    let phrases = [(0.7, "one two three"), (3.5, "four five six seven")];
    let (fake, audio) = fake_for(&phrases, 6.5)?;
    let mut want = None;
    for chunk in [160, 320, 1_000, 4_096, 16_000] {
        let mut f = fake.clone().with_unstable_tail(1);
        let texts = final_texts(&run_stream(&mut f, &audio, chunk, PolicyConfig::default())?);
        assert_eq!(
            texts,
            ["one two three", "four five six seven"],
            "chunk {chunk}"
        );
        let spans: Vec<(u64, u64)> = finals(&run_stream(
            &mut fake.clone(),
            &audio,
            chunk,
            PolicyConfig::default(),
        )?)
        .iter()
        .map(|f| (f.start, f.end))
        .collect();
        match &want {
            None => want = Some(spans),
            Some(w) => assert_eq!(&spans, w, "chunk {chunk}"),
        }
    }
    Ok(())
}

#[test]
fn finals_arrive_within_end_silence_of_speech_end() -> TestResult {
    let phrases = [(1.0, "hello there my friend")];
    let (fake, audio) = fake_for(&phrases, 5.0)?;
    let speech_end = fake.script().words().last().map_or(0.0, |w| w.end);
    let speech_end = (speech_end * SR as f64) as u64;
    for chunk in [320usize, 1_600, 3_200] {
        let run = run_stream_timed(
            &mut fake.clone(),
            &audio,
            chunk,
            PolicyConfig::default(),
            &mut |_| 0,
        )?;
        let at = run
            .events
            .iter()
            .find(|e| matches!(e.event, PolicyEvent::Final { .. }))
            .map(|e| e.at_samples)
            .ok_or("no final")?;
        let latency = at - speech_end;
        assert!(
            latency <= ms(500) + ms(40) + chunk as u64,
            "chunk {chunk}: final {latency} samples after speech end"
        );
    }
    Ok(())
}

#[test]
fn silence_and_noise_produce_no_jobs() -> TestResult {
    let cases: Vec<(&str, Vec<f32>)> = vec![
        ("silence", vec![0.0; 10 * SR as usize]),
        ("white", white_noise(10.0, -30.0, 21)),
        ("pink", pink_noise(10.0, -30.0, 22)),
    ];
    for (name, audio) in cases {
        let script = Script::default();
        let mut fake = ScriptedTranscriber::new(script, &audio);
        let run = run_stream_timed(
            &mut fake,
            &audio,
            1_600,
            PolicyConfig::default(),
            &mut |_| 0,
        )?;
        assert!(run.jobs.is_empty(), "{name}: {:?}", run.jobs);
        assert!(run.events.is_empty(), "{name}");
        assert!(fake.calls().is_empty());
    }
    Ok(())
}

#[test]
fn finalize_closes_the_utterance_now() -> TestResult {
    let (mut fake, audio) = fake_for(&[(0.5, "a b c d e f g h i j k l")], 8.0)?;
    let mut policy = StreamingPolicy::new(PolicyConfig::default())?;
    let mut events = Vec::new();
    let cut = 3 * SR as usize;
    let mut run_jobs = |policy: &mut StreamingPolicy, events: &mut Vec<PolicyEvent>| {
        while let Some(job) = policy.poll_job() {
            let r = fake.transcribe(&job.samples, &job.options);
            events.extend(policy.on_result(job.id, r));
        }
    };
    for chunk in audio[..cut].chunks(800) {
        events.extend(policy.push_audio(chunk));
        run_jobs(&mut policy, &mut events);
    }
    events.extend(policy.finalize());
    assert!(
        matches!(events.last(), Some(PolicyEvent::SpeechEnded { sample }) if *sample == cut as u64)
    );
    run_jobs(&mut policy, &mut events);
    let got = finals(&events);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].reason, EndReason::Finalize);
    assert_eq!(got[0].end, cut as u64);
    assert_eq!(got[0].text, "a b c d e");
    // Speech goes on: a new utterance, index 1, after a fresh onset.
    for chunk in audio[cut..].chunks(800) {
        events.extend(policy.push_audio(chunk));
        run_jobs(&mut policy, &mut events);
    }
    events.extend(policy.end_of_stream());
    run_jobs(&mut policy, &mut events);
    let got = finals(&events);
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[1].index, 1);
    assert!(got[1].start >= cut as u64);
    assert_eq!(got[1].text, "f g h i j k l");
    assert!(policy.is_done());
    Ok(())
}

#[test]
fn end_of_stream_flushes_an_open_utterance() -> TestResult {
    let (fake, audio) = fake_for(&[(0.5, "one two three four five six")], 4.0)?;
    let cut = ms(2_400) as usize; // the audio stops as "four" ends (2.0 s .. 2.4 s)
    let events = run_stream(
        &mut fake.clone(),
        &audio[..cut],
        1_600,
        PolicyConfig::default(),
    )?;
    let got = finals(&events);
    assert_eq!(got.len(), 1, "{events:?}");
    assert_eq!(got[0].reason, EndReason::EndOfStream);
    assert_eq!(got[0].text, "one two three four");
    assert!(got[0].end <= cut as u64);
    // A stream with no speech at all ends with nothing.
    let mut policy = StreamingPolicy::new(PolicyConfig::default())?;
    let _ = policy.push_audio(&vec![0.0; 8_000]);
    assert!(policy.end_of_stream().is_empty());
    assert!(policy.poll_job().is_none() && policy.is_done());
    assert!(
        policy.push_audio(&audio).is_empty(),
        "audio after the end is ignored"
    );
    Ok(())
}

#[test]
fn max_length_cuts_at_a_committed_word_and_carries_the_rest() -> TestResult {
    let words: Vec<String> = (0..60).map(|i| format!("w{i}")).collect();
    let text = words.join(" ");
    let (fake, audio) = fake_for(&[(0.5, &text)], 32.0)?;
    let config = PolicyConfig {
        max_utterance_samples: 10 * SR as usize,
        ..PolicyConfig::default()
    };
    let events = run_stream(
        &mut fake.clone().with_unstable_tail(2),
        &audio,
        1_600,
        config,
    )?;
    let got = finals(&events);
    assert!(got.len() >= 3, "{got:?}");
    let joined = got
        .iter()
        .map(|f| f.text.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    assert_eq!(joined, text, "every word exactly once");
    for pair in got.windows(2) {
        assert_eq!(pair[0].reason, EndReason::MaxLength);
        assert_eq!(pair[1].start, pair[0].end, "the rest is carried over");
        assert!(pair[0].end - pair[0].start <= 10 * SR + ms(600));
        // The cut lies in a gap between words (words are 0.4 s, gaps 0.1 s, from 0.5 s).
        let t = (pair[0].end as f64 / SR as f64 - 0.5) % 0.5;
        assert!(
            t >= 0.39 || t <= 0.01,
            "cut at {} s is inside a word",
            pair[0].end
        );
    }
    for (i, f) in got.iter().enumerate() {
        assert_eq!(f.index, i as u64);
    }
    Ok(())
}

#[test]
fn a_max_length_cut_is_decoded_not_made_of_committed_words() -> TestResult {
    // Partials that agree on wrong words (as tiny.en's looping partials did on a GPU build's
    // schedule) commit them. At the maximum length the audio before the cut gets a final
    // decode, whose words make the final; the committed ones stand only if it hears nothing.
    let mut h = Harness::new(PolicyConfig {
        max_utterance_samples: 4 * SR as usize,
        ..PolicyConfig::default()
    })?;
    // wrong words over the whole buffer (hyp's words end at 0.35 s + 0.3 s each)
    let job = h.partials_until_final(|secs| {
        let n = ((secs - 0.35) / 0.3).floor().max(0.0) as usize + 1;
        let wrong: Vec<String> = (0..n).map(|i| format!("g{i}")).collect();
        hyp(&wrong.join(" "))
    })?;
    assert!(
        interim_texts(&h.events)
            .iter()
            .any(|(c, _)| c.starts_with("g0 g1")),
        "the wrong words were committed"
    );
    assert!(finals(&h.events).is_empty(), "no final before its decode");
    assert!(job.samples.len() <= 4 * SR as usize);
    h.answer(&job, hyp("the words that were said"));
    let got = finals(&h.events);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].reason, EndReason::MaxLength);
    assert_eq!(got[0].text, "the words that were said");
    // The carried rest is the next utterance, starting at the cut.
    let next = h.next_job()?;
    assert_eq!(next.kind, JobKind::Partial);
    assert_eq!(next.offset_samples, got[0].end);
    Ok(())
}

#[test]
fn a_max_length_cut_moves_to_the_quiet_between_words() -> TestResult {
    // The hypotheses' word times (0.25 s long, 0.5 s apart, from 0.2 s in the buffer) are
    // off from the audio's words (0.4 s of sound, 0.1 s of silence, from 0.5 s), as a
    // fitted-context decode's times often are, so the cut they give falls inside a word;
    // the cut goes to the silence nearest to it instead.
    let mut h = Harness::new(PolicyConfig {
        max_utterance_samples: 4 * SR as usize,
        ..PolicyConfig::default()
    })?;
    let job = h.partials_until_final(|secs| {
        let n = ((secs - 0.45) / 0.5).floor().max(0.0) as usize + 1;
        let words: Vec<String> = (0..n).map(|i| format!("w{i}")).collect();
        let mut t = hyp(&words.join(" "));
        for (i, w) in t.segments[0].words.iter_mut().enumerate() {
            (w.start, w.end) = (0.2 + 0.5 * i as f64, 0.45 + 0.5 * i as f64);
        }
        t
    })?;
    let cut = job.offset_samples as usize + job.samples.len();
    let around = &h.audio[cut - 160..cut + 160];
    assert!(
        around.iter().all(|x| x.abs() < 1e-3), // the render's dither only
        "cut at {:.3} s is not in a pause between words",
        cut as f64 / SR as f64
    );
    Ok(())
}

#[test]
fn max_length_without_partials_decodes_the_whole_utterance() -> TestResult {
    let words: Vec<String> = (0..40).map(|i| format!("w{i}")).collect();
    let text = words.join(" ");
    let (fake, audio) = fake_for(&[(0.5, &text)], 21.0)?;
    let config = PolicyConfig {
        max_utterance_samples: 8 * SR as usize,
        interim_results: false,
        ..PolicyConfig::default()
    };
    let run = run_stream_timed(&mut fake.clone(), &audio, 1_600, config, &mut |_| 0)?;
    assert!(run.jobs.iter().all(|j| j.kind == JobKind::Final));
    let got = finals(&run.plain_events());
    assert!(got.len() >= 2);
    assert_eq!(got[0].reason, EndReason::MaxLength);
    let len = got[0].end - got[0].start;
    assert!((8 * SR..8 * SR + ms(100)).contains(&len), "{len}");
    // A word straddling a blind cut is lost to both sides; the rest is all there.
    let heard: Vec<String> = got
        .iter()
        .flat_map(|f| f.text.split_whitespace().map(str::to_string))
        .collect();
    assert!(heard.len() + got.len() >= words.len(), "{heard:?}");
    Ok(())
}

#[test]
fn slow_decodes_hit_the_hard_limit_at_the_whisper_window() -> TestResult {
    let words: Vec<String> = (0..70).map(|i| format!("w{i}")).collect();
    let (fake, audio) = fake_for(&[(0.5, &words.join(" "))], 36.0)?;
    let config = PolicyConfig {
        max_utterance_samples: 20 * SR as usize,
        ..PolicyConfig::default()
    };
    // Each decode costs 15 s of audio: the partial in flight at 20 s returns at 35 s.
    let run = run_stream_timed(&mut fake.clone(), &audio, 1_600, config, &mut |_| 15 * SR)?;
    assert!(
        run.jobs
            .iter()
            .all(|j| j.len_samples <= HARD_MAX_UTTERANCE_SAMPLES)
    );
    let got = finals(&run.plain_events());
    assert!(
        got.iter()
            .any(|f| f.reason == EndReason::MaxLength && f.end - f.start == 30 * SR),
        "{got:?}"
    );
    Ok(())
}

// ---- step widening ----

#[test]
fn step_widens_under_a_slow_engine_and_recovers() -> TestResult {
    let mut h = Harness::new(PolicyConfig {
        max_utterance_samples: HARD_MAX_UTTERANCE_SAMPLES,
        ..PolicyConfig::default()
    })?;
    let base = DEFAULT_STEP_SAMPLES;
    let table: &[(u64, usize)] = &[
        // (decode cost in samples, expected step after it)
        (ms(100), base),
        (ms(1_000), ms(1_200) as usize),
        (ms(2_000), ms(2_400) as usize),
        (ms(4_000), DEFAULT_MAX_STEP_SAMPLES),
        (ms(100), (DEFAULT_MAX_STEP_SAMPLES as f64 * 0.8) as usize),
        (ms(100), (DEFAULT_MAX_STEP_SAMPLES as f64 * 0.64) as usize),
        (ms(1_500), ms(1_800) as usize),
        (0, (ms(1_800) as f64 * 0.8) as usize),
    ];
    let mut previous: Option<(usize, usize)> = None; // (job length, step after it)
    for &(cost, want) in table {
        let job = h.next_job()?;
        if let Some((len, step)) = previous {
            // The next partial waited for a whole step of new audio.
            assert!(
                job.samples.len() - len >= step,
                "{} < {step}",
                job.samples.len() - len
            );
        }
        h.push(cost as usize);
        let _ = h.answer(&job, hyp("a"));
        assert_eq!(h.policy.step_samples(), want, "after a cost of {cost}");
        previous = Some((job.samples.len(), want));
    }
    // Keeping up brings the step back to the configured one.
    for _ in 0..5 {
        let job = h.next_job()?;
        let _ = h.answer(&job, hyp("a"));
    }
    assert_eq!(h.policy.step_samples(), base);
    Ok(())
}

#[test]
fn slow_engine_gets_fewer_partials_and_one_job_at_a_time() -> TestResult {
    let words: Vec<String> = (0..16).map(|i| format!("w{i}")).collect();
    let (fake, audio) = fake_for(&[(0.5, &words.join(" "))], 10.0)?;
    let fast = run_stream_timed(
        &mut fake.clone(),
        &audio,
        320,
        PolicyConfig::default(),
        &mut |_| 0,
    )?;
    let slow = run_stream_timed(
        &mut fake.clone(),
        &audio,
        320,
        PolicyConfig::default(),
        &mut |job| job.samples.len() as u64 / 2, // decodes at half real time
    )?;
    let partials = |r: &StreamRun| r.jobs.iter().filter(|j| j.kind == JobKind::Partial).count();
    assert!(
        partials(&slow) < partials(&fast),
        "{} vs {}",
        partials(&slow),
        partials(&fast)
    );
    for pair in slow.jobs.windows(2) {
        assert!(pair[1].polled_at >= pair[0].done_at, "two jobs in flight");
    }
    assert_eq!(
        final_texts(&slow.plain_events()),
        final_texts(&fast.plain_events())
    );
    Ok(())
}

// ---- guards ----

#[test]
fn hallucinations_are_dropped_and_do_not_use_an_index() -> TestResult {
    // A short blip, then real speech.
    let (fake, audio) = fake_for(&[(1.0, "Thank"), (4.0, "real words here")], 7.0)?;
    let cases: Vec<(&str, ScriptedTranscriber)> = vec![
        (
            "known phrase on little speech",
            fake.clone().with_fault(
                When::FinalCall(0),
                Fault::Text {
                    text: "Thank you.".into(),
                    no_speech_prob: 0.1,
                    avg_logprob: -0.3,
                },
            ),
        ),
        (
            "no-speech segment",
            fake.clone().with_fault(
                When::FinalCall(0),
                Fault::Text {
                    text: "Some words.".into(),
                    no_speech_prob: 0.9,
                    avg_logprob: -1.5,
                },
            ),
        ),
        (
            "punctuation only",
            fake.clone().with_fault(
                When::FinalCall(0),
                Fault::Text {
                    text: "...".into(),
                    no_speech_prob: 0.1,
                    avg_logprob: -0.3,
                },
            ),
        ),
        (
            "empty",
            fake.clone().with_fault(When::FinalCall(0), Fault::Empty),
        ),
    ];
    for (name, mut f) in cases {
        let events = run_stream(&mut f, &audio, 1_600, PolicyConfig::default())?;
        let got = finals(&events);
        assert_eq!(got.len(), 1, "{name}: {got:?}");
        assert_eq!(
            (got[0].index, got[0].text.as_str()),
            (0, "real words here"),
            "{name}"
        );
    }
    Ok(())
}

#[test]
fn dropped_utterance_clears_its_interims() -> TestResult {
    // Partials show an unconfirmed tail only (every word unstable), then the final decode
    // is silence by Whisper's no-speech rule.
    let (fake, audio) = fake_for(&[(1.0, "a b c d")], 5.0)?;
    let mut f = fake.with_unstable_tail(10).with_fault(
        When::EveryFinal,
        Fault::Text {
            text: "Thanks for watching!".into(),
            no_speech_prob: 0.9,
            avg_logprob: -2.0,
        },
    );
    let events = run_stream(&mut f, &audio, 1_600, PolicyConfig::default())?;
    assert!(finals(&events).is_empty());
    let interims = interim_texts(&events);
    assert!(interims.len() >= 2, "{interims:?}");
    assert_eq!(interims.last(), Some(&(String::new(), String::new())));
    Ok(())
}

#[test]
fn repetition_loops_are_redecoded_without_prompt_then_truncated() -> TestResult {
    let phrases = [(0.5, "first phrase"), (3.5, "say it again")];
    let (fake, audio) = fake_for(&phrases, 6.5)?;
    let lup = |when| {
        let fault = Fault::Loop {
            phrase: "again and".into(),
            repeats: 6,
        };
        (when, fault)
    };
    // Loop on the second utterance's first final decode only: the retry is clean.
    let (when, fault) = lup(When::FinalCall(1));
    let mut f = fake.clone().with_fault(when, fault);
    let events = run_stream(&mut f, &audio, 1_600, PolicyConfig::default())?;
    assert_eq!(final_texts(&events), ["first phrase", "say it again"]);
    let finals_calls: Vec<&crate::fake::CallRecord> = f
        .calls()
        .iter()
        .filter(|c| !c.options.single_segment)
        .collect();
    assert_eq!(finals_calls.len(), 3);
    assert_eq!(
        finals_calls[1].options.prompt.as_deref(),
        Some("first phrase")
    );
    assert_eq!(finals_calls[2].options.prompt, None, "retry without prompt");
    assert!(finals_calls[2].options.temperature_fallback);
    // Loops on every final decode: kept once.
    let (when, fault) = lup(When::EveryFinal);
    let mut f = fake.clone().with_fault(when, fault);
    let events = run_stream(&mut f, &audio, 1_600, PolicyConfig::default())?;
    assert_eq!(
        final_texts(&events),
        ["first phrase again and", "say it again again and"]
    );
    // Loops in partials are cut at once (no retry for partials).
    let (when, fault) = lup(When::EveryPartial);
    let mut f = fake.clone().with_fault(when, fault);
    let events = run_stream(&mut f, &audio, 1_600, PolicyConfig::default())?;
    for (committed, tail) in interim_texts(&events) {
        let all = format!("{committed} {tail}");
        assert!(all.matches("again and").count() <= 1, "{all}");
    }
    // A long phrase restated to the end of a partial (too long for `find_loop`'s n-grams,
    // a loop by compression ratio: what tiny.en does with fitted context, restating the
    // utterance until the token limit): the first telling is shown, as for short loops.
    let restated = "the cut on his chest still dripping blood the ache of his eyes";
    let fault = Fault::Loop {
        phrase: restated.into(),
        repeats: 3,
    };
    let clean = interim_texts(&run_stream(
        &mut fake.clone(),
        &audio,
        1_600,
        PolicyConfig::default(),
    )?);
    let mut f = fake.clone().with_fault(When::Call(1), fault);
    let events = run_stream(&mut f, &audio, 1_600, PolicyConfig::default())?;
    let interims = interim_texts(&events);
    let shown: Vec<String> = interims.iter().map(|(c, t)| format!("{c} {t}")).collect();
    assert!(shown.iter().any(|t| t.ends_with(restated)), "{interims:?}");
    assert!(shown.iter().all(|t| t.matches("dripping").count() <= 1));
    assert_eq!(final_texts(&events), ["first phrase", "say it again"]);
    // A restatement with other words after it is not a restated tail: such a partial is
    // not shown (Whisper's compression-ratio test); the clean ones around it are, and the
    // finals are untouched.
    let fault = Fault::Text {
        text: format!("first {restated} {restated} {restated} and then some"),
        no_speech_prob: 0.01,
        avg_logprob: -0.3,
    };
    let mut f = fake.with_fault(When::Call(1), fault);
    let events = run_stream(&mut f, &audio, 1_600, PolicyConfig::default())?;
    let interims = interim_texts(&events);
    for (committed, tail) in &interims {
        assert!(
            !format!("{committed} {tail}").contains("dripping"),
            "{interims:?}"
        );
    }
    assert_eq!(
        interims.len() + 1,
        clean.len(),
        "{interims:?} against {clean:?}"
    );
    assert_eq!(final_texts(&events), ["first phrase", "say it again"]);
    Ok(())
}

#[test]
fn failed_decodes_are_reported() -> TestResult {
    let phrases = [(0.5, "lost words"), (3.5, "kept words")];
    let (fake, audio) = fake_for(&phrases, 6.0)?;
    let mut f = fake
        .clone()
        .with_fault(When::FinalCall(0), Fault::Fail(FailureKind::Inference));
    let events = run_stream(&mut f, &audio, 1_600, PolicyConfig::default())?;
    let failures: Vec<(u64, JobKind, FailureKind)> = events
        .iter()
        .filter_map(|e| match e {
            PolicyEvent::DecodeFailed {
                utterance_index,
                kind,
                failure,
                ..
            } => Some((*utterance_index, *kind, *failure)),
            _ => None,
        })
        .collect();
    assert_eq!(failures, [(0, JobKind::Final, FailureKind::Inference)]);
    let got = finals(&events);
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].index, got[0].text.as_str()), (0, "kept words"));
    // Cancelled partials are silent.
    let mut f = fake.with_fault(When::EveryPartial, Fault::Fail(FailureKind::Cancelled));
    let events = run_stream(&mut f, &audio, 1_600, PolicyConfig::default())?;
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, PolicyEvent::DecodeFailed { .. }))
    );
    assert_eq!(final_texts(&events), ["lost words", "kept words"]);
    Ok(())
}

// ---- options: prompt, audio_ctx, language ----

#[test]
fn prompt_carries_the_tail_of_previous_finals() -> TestResult {
    let phrases = [
        (0.5, "alpha beta gamma delta"),
        (4.0, "epsilon zeta"),
        (7.0, "eta theta"),
    ];
    let (fake, audio) = fake_for(&phrases, 10.0)?;
    // (prompt budget, user prompt, prompt of each utterance's final decode)
    type Case<'a> = (usize, Option<&'a str>, [Option<&'a str>; 3]);
    let cases: &[Case<'_>] = &[
        (
            200,
            None,
            [
                None,
                Some("alpha beta gamma delta"),
                Some("alpha beta gamma delta epsilon zeta"),
            ],
        ),
        (12, None, [None, Some("gamma delta"), Some("epsilon zeta")]),
        (0, None, [None, None, None]),
        (
            11,
            Some("Names: Zeta."),
            [
                Some("Names: Zeta."),
                Some("Names: Zeta. gamma delta"),
                Some("Names: Zeta. zeta"),
            ],
        ),
    ];
    for &(max_chars, initial, ref want) in cases {
        let config = PolicyConfig {
            prompt_max_chars: max_chars,
            initial_prompt: initial.map(str::to_string),
            ..PolicyConfig::default()
        };
        let mut f = fake.clone();
        let _ = run_stream(&mut f, &audio, 1_600, config)?;
        // The prompt of each utterance's final decode.
        let prompts: Vec<Option<&str>> = f
            .calls()
            .iter()
            .filter(|c| !c.options.single_segment)
            .map(|c| c.options.prompt.as_deref())
            .collect();
        assert_eq!(prompts, want, "max {max_chars}");
    }
    Ok(())
}

#[test]
fn audio_ctx_formula() {
    let table: &[(usize, u32, u32, u32)] = &[
        // (samples, margin, floor, audio_ctx)
        (0, 64, 128, 128),
        (16_000, 64, 128, 128),
        (32_000, 64, 128, 164),
        (32_001, 64, 128, 165),
        (160_000, 64, 128, 564),
        (160_000, 0, 0, 500),
        (480_000, 64, 128, 1_500),
        (10_000_000, 64, 128, 1_500),
    ];
    for &(samples, margin, floor, want) in table {
        assert_eq!(audio_ctx_for(samples, margin, floor), want, "{samples}");
    }
}

#[test]
fn fitted_finals_use_the_wide_margin() -> TestResult {
    let (fake, audio) = fake_for(&[(0.5, "one two three four five")], 4.0)?;
    let config = PolicyConfig {
        final_context: FinalContext::Fit,
        ..PolicyConfig::default()
    };
    let mut f = fake;
    let run = run_stream_timed(&mut f, &audio, 1_600, config, &mut |_| 0)?;
    let finals: Vec<_> = run
        .jobs
        .iter()
        .zip(f.calls())
        .filter(|(j, _)| j.kind == JobKind::Final)
        .collect();
    assert!(!finals.is_empty());
    for (job, call) in finals {
        let want = audio_ctx_for(job.len_samples, WIDE_AUDIO_CTX_MARGIN, WIDE_AUDIO_CTX_FLOOR);
        // A short utterance gets the floor: 512 frames, a third of the window.
        assert_eq!(want, WIDE_AUDIO_CTX_FLOOR);
        assert_eq!(call.options.audio_ctx, Some(want));
    }
    Ok(())
}

#[test]
fn jobs_carry_the_right_options() -> TestResult {
    let (fake, audio) = fake_for(&[(0.5, "un deux trois quatre cinq")], 4.0)?;
    let config = PolicyConfig {
        language: Some("fr".into()),
        translate: true,
        ..PolicyConfig::default()
    };
    let mut f = fake.clone();
    let run = run_stream_timed(&mut f, &audio, 1_600, config, &mut |_| 0)?;
    assert!(run.jobs.iter().any(|j| j.kind == JobKind::Partial));
    assert!(run.jobs.iter().any(|j| j.kind == JobKind::Final));
    for (job, call) in run.jobs.iter().zip(f.calls()) {
        let o = &call.options;
        let want_ctx = match job.kind {
            JobKind::Partial => Some(audio_ctx_for(job.len_samples, 64, 128)),
            // Finals use the model's full window.
            JobKind::Final => None,
        };
        assert_eq!(o.audio_ctx, want_ctx, "{:?}", job.kind);
        assert_eq!(o.language.as_deref(), Some("fr"));
        assert!(o.translate);
        let partial = job.kind == JobKind::Partial;
        assert_eq!(o.single_segment, partial);
        assert_eq!(o.temperature_fallback, !partial);
        assert!(o.word_timestamps);
        assert_eq!(call.offset_samples, Some(job.offset_samples));
    }
    let events = run.plain_events();
    assert!(events.iter().any(|e| matches!(
        e,
        PolicyEvent::Final { language: Some(l), .. } if l == "fr"
    )));
    // Without a language, the first detection is kept for the rest of the utterance.
    let mut f = fake;
    let _ = run_stream(&mut f, &audio, 1_600, PolicyConfig::default())?;
    assert_eq!(f.calls()[0].options.language, None);
    assert!(
        f.calls()[1..]
            .iter()
            .all(|c| c.options.language.as_deref() == Some("en"))
    );
    Ok(())
}

#[test]
fn voice_activity_events_bracket_utterances() -> TestResult {
    let (mut fake, audio) = fake_for(&[(1.0, "a b c"), (4.0, "d e")], 6.0)?;
    let events = run_stream(&mut fake, &audio, 1_600, PolicyConfig::default())?;
    let vad: Vec<&PolicyEvent> = events
        .iter()
        .filter(|e| {
            matches!(
                e,
                PolicyEvent::SpeechStarted { .. } | PolicyEvent::SpeechEnded { .. }
            )
        })
        .collect();
    assert_eq!(vad.len(), 4, "{vad:?}");
    let got = finals(&events);
    for (f, pair) in got.iter().zip(vad.chunks(2)) {
        assert_eq!(pair[0], &PolicyEvent::SpeechStarted { sample: f.start });
        assert_eq!(pair[1], &PolicyEvent::SpeechEnded { sample: f.end });
    }
    Ok(())
}

#[test]
fn progress_tracks_received_processed_and_final() -> TestResult {
    let (mut fake, audio) = fake_for(&[(1.0, "a b c d e")], 6.0)?;
    let mut policy = StreamingPolicy::new(PolicyConfig::default())?;
    let mut last = Progress::default();
    for chunk in audio.chunks(1_600) {
        let _ = policy.push_audio(chunk);
        while let Some(job) = policy.poll_job() {
            let r = fake.transcribe(&job.samples, &job.options);
            let _ = policy.on_result(job.id, r);
        }
        let p = policy.progress();
        assert!(p.received_samples >= last.received_samples);
        assert!(p.processed_samples >= last.processed_samples);
        assert!(p.final_samples >= last.final_samples);
        assert!(p.final_samples <= p.received_samples && p.processed_samples <= p.received_samples);
        last = p;
    }
    assert_eq!(last.received_samples, audio.len() as u64);
    assert!(
        last.final_samples < last.received_samples,
        "the lookback may still change"
    );
    let _ = policy.end_of_stream();
    assert_eq!(
        policy.progress().final_samples,
        audio.len() as u64,
        "everything is final"
    );
    Ok(())
}

#[test]
fn config_is_validated() {
    let bad = [
        PolicyConfig {
            step_samples: 0,
            ..PolicyConfig::default()
        },
        PolicyConfig {
            max_step_samples: 100,
            ..PolicyConfig::default()
        },
        PolicyConfig {
            max_utterance_samples: 40 * SR as usize,
            ..PolicyConfig::default()
        },
        PolicyConfig {
            language: Some(String::new()),
            ..PolicyConfig::default()
        },
        PolicyConfig {
            no_speech_threshold: 1.5,
            ..PolicyConfig::default()
        },
    ];
    for config in bad {
        assert!(StreamingPolicy::new(config.clone()).is_err(), "{config:?}");
    }
    assert!(StreamingPolicy::new(PolicyConfig::default()).is_ok());
}

#[test]
fn fixture_speech_streams_to_its_sentences() -> TestResult {
    // The real VAD on espeak speech, with a fake that knows the sentence spans.
    let dir = crate::vad::tests::workspace_root().join("audio-fixtures/speech");
    let (wav, tsv) = (dir.join("pauses.wav"), dir.join("pauses.segments.tsv"));
    if !wav.is_file() || !tsv.is_file() {
        eprintln!("skipping: pauses fixture absent");
        return Ok(());
    }
    let audio = crate::vad::tests::read_wav_16k_mono(&wav)?.ok_or("not 16 kHz mono")?;
    let mut words = Vec::new();
    for line in std::fs::read_to_string(&tsv)?.lines().skip(1) {
        let f: Vec<&str> = line.split('\t').collect();
        let (Some(s), Some(e), Some(text)) = (f.first(), f.get(1), f.get(2)) else {
            continue;
        };
        let (Ok(s), Ok(e)) = (s.parse::<f64>(), e.parse::<f64>()) else {
            continue;
        };
        // Spread the sentence's words evenly over its span.
        let pieces: Vec<&str> = text.split_whitespace().collect();
        let d = (e - s) / pieces.len() as f64;
        for (i, p) in pieces.iter().enumerate() {
            words.push(crate::fake::ScriptWord {
                text: (*p).to_string(),
                start: s + d * i as f64,
                end: s + d * (i + 1) as f64 - 0.01,
            });
        }
    }
    let script = Script::new(words)?;
    let expected: Vec<String> = std::fs::read_to_string(&tsv)?
        .lines()
        .skip(1)
        .filter_map(|l| l.split('\t').nth(2).map(str::to_string))
        .collect();
    // Exact zeros in the fixture's pauses cannot be located: add the fake's own dither.
    let dithered: Vec<f32> = audio
        .iter()
        .zip(Script::default().render(audio.len() as f64 / SR as f64 + 1.0))
        .map(|(a, d)| ((a * 1024.0).round() / 1024.0 + d).clamp(-1.0, 1.0))
        .collect();
    let mut fake = ScriptedTranscriber::new(script, &dithered).with_unstable_tail(1);
    let events = run_stream(&mut fake, &dithered, 1_600, PolicyConfig::default())?;
    assert_eq!(final_texts(&events), expected);
    Ok(())
}

#[test]
fn prompt_tail_starts_at_a_word_boundary() {
    let table: &[(&str, usize, &str)] = &[
        ("alpha beta gamma", 100, "alpha beta gamma"),
        ("alpha beta gamma", 10, "beta gamma"),
        ("alpha beta gamma", 9, "gamma"),
        ("alpha beta gamma", 3, ""),
        ("alpha beta gamma", 0, ""),
        ("我们今天去公园散步", 4, "公园散步"),
        ("déjà vu à Paris", 8, "à Paris"),
    ];
    for &(text, max, want) in table {
        assert_eq!(tail_chars(text, max), want, "{text:?} {max}");
    }
}

#[test]
fn a_gpu_decodes_sooner_and_more_often_than_the_cpu() -> TestResult {
    assert_eq!(PolicyConfig::for_device(false), PolicyConfig::default());
    let gpu = PolicyConfig::for_device(true);
    gpu.validate()?;
    assert_eq!(
        PolicyConfig {
            step_samples: DEFAULT_STEP_SAMPLES,
            min_partial_samples: DEFAULT_MIN_PARTIAL_SAMPLES,
            min_commit_samples: 0,
            ..gpu.clone()
        },
        PolicyConfig::default(),
        "only the step, the first partial and the first commit differ"
    );
    // On the same speech, the GPU settings give the first partial sooner and more of them.
    let (fake, audio) = fake_for(&[(0.5, "one two three four five six seven eight")], 5.0)?;
    let partials = |config: PolicyConfig| -> Result<Vec<u64>, ConfigError> {
        let run = run_stream_timed(&mut fake.clone(), &audio, 1_600, config, &mut |_| 0)?;
        Ok(run
            .events
            .iter()
            .filter(|e| matches!(e.event, PolicyEvent::Interim { .. }))
            .map(|e| e.at_samples)
            .collect())
    };
    let cpu = partials(PolicyConfig::default())?;
    let gpu = partials(gpu)?;
    assert!(!cpu.is_empty());
    assert!(gpu[0] < cpu[0], "first partial at {} vs {}", gpu[0], cpu[0]);
    assert!(
        gpu.len() > cpu.len(),
        "partials {} vs {}",
        gpu.len(),
        cpu.len()
    );
    Ok(())
}
