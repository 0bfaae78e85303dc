//! Was any audio lost? Compares what a client sent with what the server reported in its
//! responses' `Progress` (`audio_received`, `audio_processed`, `final_offset`), and checks
//! that a target is on the loopback interface.
//!
//! The server writes progress only on responses (interims, finals, heartbeats after
//! decodes, speech events); it sends nothing for audio that holds no speech after the last
//! utterance closed. So for a completed stream the last reported `audio_received` may stop
//! short of what was sent. [`lost_samples`] tells that silent tail from lost audio by
//! running the same voice activity detector as the server's streaming policy
//! ([`transcribe_core::Vad`], deterministic and independent of chunking) over the audio:
//! the tail is legitimately unreported only when the detector was not inside speech where
//! the reports stop and finds no speech start after it (speech there would have opened an
//! utterance whose final, sent after end of audio, reports everything received).
//! This assumes the server's default VAD settings (no `--endpoint-silence`-style flags).

use std::net::{IpAddr, SocketAddr};

use transcribe_core::{Vad, VadConfig, VadEvent};

/// What the server reported about one stream, in samples at 16 kHz.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reported {
    /// Largest `audio_received`.
    pub received: u64,
    /// Largest `audio_processed`.
    pub processed: u64,
    /// Largest `final_offset`.
    pub final_offset: u64,
}

/// The verdict on a completed stream's audio.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Samples sent but not accounted for by the server.
    pub lost: u64,
    /// Samples after the last report that hold no speech (the server had nothing to say).
    pub silent_tail: u64,
    /// Samples the server reported receiving beyond what was sent (must be 0).
    pub over_reported: u64,
}

/// Accounts for `sent` (the samples of a completed stream) against `reported`.
pub fn lost_samples(sent: &[f32], reported: Reported) -> Verdict {
    let total = sent.len() as u64;
    if reported.received >= total {
        return Verdict {
            over_reported: reported.received - total,
            ..Verdict::default()
        };
    }
    let gap = total - reported.received;
    let Ok(mut vad) = Vad::new(VadConfig::default()) else {
        // The default config is valid; should it ever not be, count the gap as lost
        // rather than excuse it.
        return Verdict {
            lost: gap,
            ..Verdict::default()
        };
    };
    let split = reported.received as usize;
    let _ = vad.push(&sent[..split]);
    let open_at_split = vad.is_speaking();
    let speech_after = vad
        .push(&sent[split..])
        .iter()
        .any(|e| matches!(e, VadEvent::SpeechStart { .. }));
    if open_at_split || speech_after {
        Verdict {
            lost: gap,
            ..Verdict::default()
        }
    } else {
        Verdict {
            silent_tail: gap,
            ..Verdict::default()
        }
    }
}

/// Why a target was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TargetError {
    /// Only `http://HOST:PORT` URLs are taken.
    #[error("{url:?}: give http://HOST:PORT (e.g. http://127.0.0.1:50051)")]
    Malformed {
        /// The URL given.
        url: String,
    },
    /// The soak only loads servers on this machine's loopback interface.
    #[error("{url:?} is not on loopback: the soak only targets 127.0.0.1, ::1 or localhost")]
    NotLoopback {
        /// The URL given.
        url: String,
    },
}

/// Checks that `url` is `http://` on a loopback address (`127.0.0.0/8`, `::1`,
/// `localhost`) with a port.
///
/// # Errors
/// [`TargetError`] otherwise.
pub fn check_loopback(url: &str) -> Result<(), TargetError> {
    let malformed = || TargetError::Malformed {
        url: url.to_owned(),
    };
    let rest = url.strip_prefix("http://").ok_or_else(malformed)?;
    let authority = rest.split('/').next().unwrap_or_default();
    if let Ok(addr) = authority.parse::<SocketAddr>() {
        return if addr.ip().is_loopback() {
            Ok(())
        } else {
            Err(TargetError::NotLoopback {
                url: url.to_owned(),
            })
        };
    }
    let (host, port) = authority.rsplit_once(':').ok_or_else(malformed)?;
    port.parse::<u16>().map_err(|_| malformed())?;
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if loopback {
        Ok(())
    } else if host.is_empty() {
        Err(malformed())
    } else {
        Err(TargetError::NotLoopback {
            url: url.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: usize = 16_000;

    /// A speech-like signal: a 150 Hz buzz with harmonics, amplitude-modulated (voiced
    /// speech puts its energy in harmonics; a pure tone is rejected by the detector).
    fn voiced(seconds: f64) -> Vec<f32> {
        let n = (seconds * RATE as f64) as usize;
        (0..n)
            .map(|i| {
                let t = i as f64 / RATE as f64;
                let mut s = 0.0;
                for h in 1..=12 {
                    s += (2.0 * std::f64::consts::PI * 150.0 * h as f64 * t).sin() / h as f64;
                }
                let envelope = 0.5 + 0.5 * (2.0 * std::f64::consts::PI * 4.0 * t).sin().abs();
                (0.2 * envelope * s) as f32
            })
            .collect()
    }

    fn silence(seconds: f64) -> Vec<f32> {
        vec![0.0; (seconds * RATE as f64) as usize]
    }

    fn detects_speech(audio: &[f32]) -> bool {
        Vad::new(VadConfig::default()).is_ok_and(|mut v| {
            v.push(audio)
                .iter()
                .any(|e| matches!(e, VadEvent::SpeechStart { .. }))
        })
    }

    #[test]
    fn full_reports_lose_nothing() {
        let audio = silence(1.0);
        let r = Reported {
            received: audio.len() as u64,
            ..Reported::default()
        };
        assert_eq!(lost_samples(&audio, r), Verdict::default());
        let over = Reported {
            received: audio.len() as u64 + 5,
            ..Reported::default()
        };
        assert_eq!(lost_samples(&audio, over).over_reported, 5);
    }

    #[test]
    fn a_silent_tail_is_not_lost_but_speech_after_the_reports_is() {
        let mut audio = silence(1.0);
        audio.extend(voiced(1.5));
        assert!(
            detects_speech(&audio),
            "the test signal must read as speech"
        );
        audio.extend(silence(3.0));
        // Reports stopped 2 s into the trailing silence: the last second is silent.
        let reported = Reported {
            received: (4.5 * RATE as f64) as u64,
            ..Reported::default()
        };
        let v = lost_samples(&audio, reported);
        assert_eq!(
            (v.lost, v.silent_tail),
            (0, audio.len() as u64 - reported.received)
        );
        // Reports stopped before the speech: everything after is lost.
        let early = Reported {
            received: (0.5 * RATE as f64) as u64,
            ..Reported::default()
        };
        let v = lost_samples(&audio, early);
        assert_eq!(v.lost, audio.len() as u64 - early.received);
        assert_eq!(v.silent_tail, 0);
        // Reports stopped inside the speech: lost too.
        let inside = Reported {
            received: (1.8 * RATE as f64) as u64,
            ..Reported::default()
        };
        assert!(lost_samples(&audio, inside).lost > 0);
    }

    #[test]
    fn only_loopback_targets() {
        for ok in [
            "http://127.0.0.1:50051",
            "http://127.1.2.3:1/",
            "http://[::1]:8080",
            "http://localhost:50051",
        ] {
            assert_eq!(check_loopback(ok), Ok(()), "{ok}");
        }
        for far in [
            "http://10.0.0.1:50051",
            "http://example.org:50051",
            "http://[2001:db8::1]:1",
        ] {
            assert!(
                matches!(check_loopback(far), Err(TargetError::NotLoopback { .. })),
                "{far}"
            );
        }
        for bad in [
            "127.0.0.1:50051",
            "https://127.0.0.1:1",
            "http://localhost",
            "http://:5",
        ] {
            assert!(
                matches!(check_loopback(bad), Err(TargetError::Malformed { .. })),
                "{bad}"
            );
        }
    }
}
