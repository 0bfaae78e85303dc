//! A microphone source's feed. With the `capture` feature (default): cpal capture on a
//! thread of its own (cpal streams stay on the thread that made them) forwarding 16 kHz
//! chunks through a bounded channel ([`super::MIC_EVENT_CAPACITY`]). Without it nothing links
//! the system's ALSA library, and a microphone source cannot open (the configuration refuses
//! `--source mic` before that: `config::ServerArgs::validate`).

use transcribe_proto::v1::AudioFormat;

/// What an opened microphone is.
pub(super) struct MicInfo {
    pub name: String,
    pub device: String,
    /// Its native format, before conversion.
    pub format: AudioFormat,
    /// cpal's name of the sample format (`i16`, `f32`, ...), for the log.
    pub sample_format: String,
}

#[cfg(feature = "capture")]
pub(super) use with_capture::{MicFeed, open};

#[cfg(not(feature = "capture"))]
pub(super) use without_capture::{MicFeed, open};

#[cfg(feature = "capture")]
mod with_capture {
    use tokio::sync::{mpsc, oneshot};
    use transcribe_audio::capture::{Capture, CaptureConfig, CaptureEvent, CaptureInfo};
    use transcribe_proto::v1::{AudioEncoding, AudioFormat};

    use super::super::FeedItem;
    use super::MicInfo;
    use crate::error::RequestError;

    /// A running capture: its events, and the capture thread's stop line (dropping the feed
    /// stops the capture).
    pub(crate) struct MicFeed {
        events: mpsc::Receiver<CaptureEvent>,
        _stop: std::sync::mpsc::Sender<()>,
    }

    impl MicFeed {
        /// The microphone's next chunk as it arrives. Cancel-safe.
        pub(crate) async fn next(&mut self, name: &str) -> FeedItem {
            loop {
                match self.events.recv().await {
                    Some(CaptureEvent::Audio(samples)) => return FeedItem::Audio(samples),
                    Some(CaptureEvent::Overrun {
                        total_frames_dropped,
                    }) => {
                        tracing::warn!(
                            message = "Capture ring overran; audio was lost.",
                            total_frames_dropped
                        );
                    }
                    Some(CaptureEvent::Ended(error)) => {
                        return FeedItem::Failed(RequestError::SourceUnavailable {
                            name: name.to_owned(),
                            reason: error.to_string(),
                        });
                    }
                    None => {
                        return FeedItem::Failed(RequestError::SourceUnavailable {
                            name: name.to_owned(),
                            reason: "the capture thread stopped".into(),
                        });
                    }
                }
            }
        }
    }

    /// Starts capturing from `device` on a thread of its own that owns the capture and
    /// forwards its events.
    pub(crate) async fn open(
        name: &str,
        device: Option<String>,
    ) -> Result<(MicFeed, MicInfo), RequestError> {
        let (events_tx, events) = mpsc::channel(super::super::MIC_EVENT_CAPACITY);
        let (ready_tx, ready_rx) = oneshot::channel();
        let (stop, stop_rx) = std::sync::mpsc::channel::<()>();
        let unavailable = |reason: String| RequestError::SourceUnavailable {
            name: name.to_owned(),
            reason,
        };
        std::thread::Builder::new()
            .name("source-capture".into())
            .spawn(move || {
                let config = CaptureConfig {
                    device,
                    ..CaptureConfig::default()
                };
                // Runs on the capture's consumer thread (not a runtime thread): blocking here
                // is the documented full-policy (the ring then drops and counts frames).
                let sink = move |event| events_tx.blocking_send(event).is_ok();
                match Capture::start(&config, sink) {
                    Ok(capture) => {
                        let _ = ready_tx.send(Ok(capture.info().clone()));
                        // Until the feed is dropped.
                        let _ = stop_rx.recv();
                        let stats = capture.stop();
                        tracing::info!(
                            message = "Capture stopped.",
                            frames = stats.frames_captured,
                            dropped = stats.frames_dropped,
                            xruns = stats.xruns
                        );
                    }
                    Err(error) => {
                        let _ = ready_tx.send(Err(error));
                    }
                }
            })
            .map_err(|e| unavailable(format!("cannot start the capture thread: {e}")))?;
        let info = ready_rx
            .await
            .map_err(|_| unavailable("the capture thread ended".into()))?
            .map_err(|e| unavailable(e.to_string()))?;
        let feed = MicFeed {
            events,
            _stop: stop,
        };
        Ok((feed, describe(info)))
    }

    fn describe(info: CaptureInfo) -> MicInfo {
        let encoding = match info.sample_format.as_str() {
            "i16" => AudioEncoding::Linear16,
            "f32" => AudioEncoding::Float32,
            _ => AudioEncoding::Unspecified,
        };
        MicInfo {
            format: AudioFormat {
                encoding: encoding as i32,
                sample_rate_hertz: i32::try_from(info.sample_rate).unwrap_or(i32::MAX),
                audio_channel_count: i32::from(info.channels),
            },
            name: info.name,
            device: info.device,
            sample_format: info.sample_format,
        }
    }
}

#[cfg(not(feature = "capture"))]
mod without_capture {
    use super::super::FeedItem;
    use super::MicInfo;
    use crate::error::RequestError;

    /// Never made: this build cannot capture.
    pub(crate) enum MicFeed {}

    impl MicFeed {
        pub(crate) async fn next(&mut self, _name: &str) -> FeedItem {
            match *self {}
        }
    }

    pub(crate) async fn open(
        name: &str,
        _device: Option<String>,
    ) -> Result<(MicFeed, MicInfo), RequestError> {
        Err(RequestError::SourceUnavailable {
            name: name.to_owned(),
            reason: crate::config::NO_CAPTURE.into(),
        })
    }
}
