//! Decode speed: `cargo run --release -p transcribe-audio --example decode_bench [FILE...]`.
//!
//! Decodes each file (default: a generated 60 s, 44.1 kHz, stereo, 16-bit WAV) several times
//! and prints the median wall time, the real-time factor (seconds of processing per second of
//! audio) and the source format, as a markdown table and as JSON lines.

use std::path::PathBuf;
use std::time::Instant;

use transcribe_audio::decode_file;

const RUNS: usize = 5;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut files: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let tmp = tempfile::tempdir()?;
    if files.is_empty() {
        let path = tmp.path().join("60s_44k1_stereo.wav");
        write_test_wav(&path)?;
        files.push(path);
    }
    let mut json = Vec::new();
    println!("| file | format | audio s | median ms | RTF |");
    println!("|---|---|---:|---:|---:|");
    for path in &files {
        let mut times = Vec::with_capacity(RUNS);
        let mut last = None;
        for _ in 0..RUNS {
            let start = Instant::now();
            let audio = decode_file(path)?;
            times.push(start.elapsed().as_secs_f64());
            last = Some(audio);
        }
        times.sort_by(f64::total_cmp);
        let median = times[RUNS / 2];
        let Some(audio) = last else { continue };
        let secs = audio.info.duration_secs();
        let format = format!(
            "{}/{} {} Hz {} ch",
            audio.info.container, audio.info.codec, audio.info.sample_rate, audio.info.channels
        );
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        println!(
            "| {name} | {format} | {secs:.1} | {:.1} | {:.4} |",
            median * 1e3,
            median / secs
        );
        json.push(format!(
            "{{\"file\":{name:?},\"format\":{format:?},\"audio_s\":{secs:.3},\"median_ms\":{:.2},\"rtf\":{:.5}}}",
            median * 1e3,
            median / secs
        ));
    }
    for line in json {
        println!("{line}");
    }
    Ok(())
}

/// 60 s of a 440/660 Hz stereo pair with a little noise, 44.1 kHz, 16-bit.
fn write_test_wav(path: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    let spec = hound::WavSpec {
        channels: 2,
        sample_rate: 44_100,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec)?;
    let mut noise = 1u32;
    for i in 0..60 * 44_100 {
        let t = f64::from(i) / 44_100.0;
        noise = noise.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        let n = f64::from(noise >> 16) / 65_536.0 - 0.5;
        let l = 0.5 * (2.0 * std::f64::consts::PI * 440.0 * t).sin() + 0.05 * n;
        let r = 0.5 * (2.0 * std::f64::consts::PI * 660.0 * t).sin() - 0.05 * n;
        w.write_sample((l * 32_767.0) as i16)?;
        w.write_sample((r * 32_767.0) as i16)?;
    }
    w.finalize()?;
    Ok(())
}
