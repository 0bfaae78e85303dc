//! Batching across streams ([`transcribe_engine::multi`], our vendored whisper.cpp's
//! `whisper_decode_multi_with_states`) against whisper.cpp's own one-state decoder call,
//! with the real tiny.en on the CPU (skips, with a note, when tiny.en cannot be resolved):
//! three states with different speech, at different positions, stepped together give each
//! state the logits, and so the greedy tokens, that stepping it alone gives.

mod common;

use common::{speech_dir, tiny_en};
use transcribe_core::EngineError;
use transcribe_core::audio::WINDOW_SAMPLES;
use transcribe_engine::EngineConfig;
use transcribe_engine::multi::{MultiModel, argmax};

fn speech(name: &str) -> Result<Vec<f32>, Box<dyn std::error::Error>> {
    let mut samples = transcribe_audio::decode_file(speech_dir().join(name))?.samples;
    samples.truncate(WINDOW_SAMPLES);
    Ok(samples)
}

fn config(flash_attn: bool) -> EngineConfig {
    EngineConfig {
        use_gpu: false,
        flash_attn,
        ..EngineConfig::default()
    }
}

#[test]
fn states_stepped_together_get_the_logits_of_stepping_each_alone()
-> Result<(), Box<dyn std::error::Error>> {
    let Some(path) = tiny_en() else {
        return Ok(());
    };
    let model = MultiModel::load(&path, &config(true))?;
    let prompt = model.english_prompt();
    let clips = ["cooking.wav", "dog.wav", "market.wav"];
    let mut alone = Vec::new();
    let mut together = Vec::new();
    let mut n_past = Vec::new();
    for (i, clip) in clips.iter().enumerate() {
        let samples = speech(clip)?;
        let (mut a, mut t) = (model.state()?, model.state()?);
        a.encode(&samples)?;
        t.encode(&samples)?;
        a.decode(&prompt, 0)?;
        t.decode(&prompt, 0)?;
        // State i first takes i greedy steps on its own, so the states stand at different
        // positions when they are stepped together.
        let mut pos = prompt.len() as i32;
        for _ in 0..i {
            let token = argmax(a.logits());
            a.decode(&[token], pos)?;
            t.decode(&[token], pos)?;
            pos += 1;
        }
        alone.push(a);
        together.push(t);
        n_past.push(pos);
    }

    for step in 0..12 {
        let tokens: Vec<i32> = alone.iter().map(|a| argmax(a.logits())).collect();
        for (i, (a, t)) in alone.iter().zip(&together).enumerate() {
            let diff = a
                .logits()
                .iter()
                .zip(t.logits())
                .map(|(x, y)| (x - y).abs())
                .fold(0.0_f32, f32::max);
            assert!(
                diff < 0.05,
                "{}: logits differ by {diff} after {step} steps",
                clips[i]
            );
            assert_eq!(argmax(t.logits()), tokens[i], "{}", clips[i]);
        }
        for (i, a) in alone.iter_mut().enumerate() {
            a.decode(&[tokens[i]], n_past[i])?;
        }
        let mut refs: Vec<_> = together.iter_mut().collect();
        model.decode_multi(&mut refs, &tokens, &n_past)?;
        for p in &mut n_past {
            *p += 1;
        }
    }
    // The comparison after the last step.
    for (a, t) in alone.iter().zip(&together) {
        assert_eq!(argmax(a.logits()), argmax(t.logits()));
    }
    Ok(())
}

#[test]
fn bad_calls_are_refused_with_a_reason() -> Result<(), Box<dyn std::error::Error>> {
    let Some(path) = tiny_en() else {
        return Ok(());
    };
    let model = MultiModel::load(&path, &config(true))?;
    let other = MultiModel::load(&path, &config(true))?;
    let mut state = model.state()?;
    assert!(state.logits().is_empty(), "no logits before a decode");
    assert!(matches!(
        model.decode_multi(&mut [], &[], &[]),
        Err(EngineError::InvalidOptions(_))
    ));
    assert!(matches!(
        model.decode_multi(&mut [&mut state], &[1, 2], &[0]),
        Err(EngineError::InvalidOptions(_))
    ));
    // A state of another model.
    let mut foreign = other.state()?;
    assert!(matches!(
        model.decode_multi(&mut [&mut state, &mut foreign], &[1, 1], &[0, 0]),
        Err(EngineError::InvalidOptions(_))
    ));
    // Without flash attention whisper.cpp refuses the step (the patched path needs it).
    let plain = MultiModel::load(&path, &config(false))?;
    let mut plain_state = plain.state()?;
    plain_state.encode(&speech("short.wav")?)?;
    let sot = plain.english_prompt()[0];
    assert!(matches!(
        plain.decode_multi(&mut [&mut plain_state], &[sot], &[0]),
        Err(EngineError::Inference(_))
    ));
    Ok(())
}
