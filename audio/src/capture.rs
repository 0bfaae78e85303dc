//! Microphone capture with `cpal`: the default or a named input device, in its native rate,
//! sample format and channel count, converted to 16 kHz mono by the same [`Converter`] as
//! files and client audio.
//!
//! Three parts, each in its own execution domain (STYLE.md, "Three execution domains"):
//! - **The cpal callback** (cpal's audio thread) only turns the device's samples into `f32`
//!   and copies whole frames into a pre-allocated lock-free SPSC ring ([`rtrb`]). When the ring
//!   is full the newest frames are dropped and counted ([`CaptureStats::frames_dropped`]): no
//!   allocation, no lock, no logging, no unwrap there.
//! - **The error callback** only forwards cpal's error into a bounded channel
//!   ([`ERROR_CAPACITY`]; full: the newest error is dropped, the older ones already say
//!   what happened).
//! - **A consumer thread** drains the ring every [`CONSUMER_POLL`], downmixes and resamples
//!   with [`Converter`], and hands 16 kHz mono chunks to the caller's sink as
//!   [`CaptureEvent::Audio`]. Overruns are reported as [`CaptureEvent::Overrun`]; buffer
//!   over/underruns that cpal recovers from itself (`Xrun`) are counted and capture goes on;
//!   any other stream error (device unplugged, invalidated) ends capture with
//!   [`CaptureEvent::Ended`].
//!
//! A sink that blocks (a full downstream channel) makes the ring fill up and the callback
//! drop and count frames: the only place audio may be lost is the one place that must not wait.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, sync_channel};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
use cpal::{FromSample, Sample, SampleFormat, SizedSample, StreamConfig};
use rtrb::{Consumer, Producer, RingBuffer};

use crate::{AudioError, Converter};

/// Default ring capacity: 2 s of native audio. The consumer drains it every 10 ms, so it
/// only fills when the sink stalls for that long (a blocked downstream channel).
pub const DEFAULT_RING_SECONDS: f64 = 2.0;

/// How often the consumer thread drains the ring: 10 ms (a typical ALSA period is 5-25 ms;
/// this adds at most 10 ms of latency and keeps the thread mostly asleep).
pub const CONSUMER_POLL: Duration = Duration::from_millis(10);

/// Capacity of the error channel between cpal's error callback and the consumer thread.
/// Full-policy: the newest error is dropped (the queued ones already end or flag capture).
pub const ERROR_CAPACITY: usize = 16;

/// Default stall timeout: 3 s without a single captured frame ends capture with
/// [`CaptureError::Stalled`]. Devices deliver every period (typically 5-100 ms); some lost
/// devices (a sound server that died under the ALSA pulse plugin, say) stop delivering
/// without cpal reporting an error.
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(3);

/// Native samples the consumer converts per pass: at most this many seconds of audio.
const CONSUMER_CHUNK_SECONDS: f64 = 0.1;

/// Why capture could not start or stopped. Each variant names the device where one is known.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaptureError {
    /// The audio system cannot be used at all (no ALSA, no sound server). Install or start
    /// it; nothing else will help.
    #[error("cannot list audio input devices: {reason}")]
    Host {
        /// cpal's error (shown in the message, so not chained as a source: `{:#}` would
        /// print it twice).
        reason: cpal::Error,
    },

    /// There is no default input device. Connect a microphone, or name a device (see the
    /// device list).
    #[error("no default audio input device: connect a microphone or name a device")]
    NoDefaultDevice,

    /// No input device matches the name. `available` lists what there is: pick one of them.
    #[error("no audio input device matches {name:?}; available: {}", available.join(", "))]
    DeviceNotFound {
        /// The name asked for.
        name: String,
        /// The input devices found (ids).
        available: Vec<String>,
    },

    /// More than one device matches the name. Use one of the ids in `matches`.
    #[error("{name:?} matches several input devices: {}", matches.join(", "))]
    AmbiguousDevice {
        /// The name asked for.
        name: String,
        /// The devices it matches (ids).
        matches: Vec<String>,
    },

    /// The device has no usable input configuration (it may be output-only, busy or gone).
    /// Retrying may succeed if it was busy.
    #[error("audio device {device:?} has no usable input configuration: {reason}")]
    Config {
        /// The device id.
        device: String,
        /// cpal's error (shown in the message, so not chained as a source: `{:#}` would
        /// print it twice).
        reason: cpal::Error,
    },

    /// The device delivers a sample format this crate does not read (DSD, say). Pick another
    /// device or configure it for PCM.
    #[error("audio device {device:?} delivers unsupported sample format {format}")]
    UnsupportedFormat {
        /// The device id.
        device: String,
        /// The format, as cpal names it.
        format: String,
    },

    /// The device's rate or channel count cannot be converted (outside
    /// [`MIN_INPUT_RATE`](crate::MIN_INPUT_RATE)..=[`MAX_INPUT_RATE`](crate::MAX_INPUT_RATE)).
    #[error("audio device {device:?}: {reason}")]
    Convert {
        /// The device id.
        device: String,
        /// The converter's error (shown in the message).
        reason: AudioError,
    },

    /// The input stream could not be opened or started (device busy, permission denied,
    /// unplugged). The message says which; retrying may succeed when it was busy.
    #[error("cannot open audio device {device:?}: {reason}")]
    Open {
        /// The device id.
        device: String,
        /// cpal's error (shown in the message, so not chained as a source: `{:#}` would
        /// print it twice).
        reason: cpal::Error,
    },

    /// The running stream failed (device unplugged, stream invalidated). Capture has ended;
    /// start it again once the device is back.
    #[error("audio device {device:?} failed: {reason}")]
    Stream {
        /// The device id.
        device: String,
        /// cpal's error (shown in the message, so not chained as a source: `{:#}` would
        /// print it twice).
        reason: cpal::Error,
    },

    /// The device stopped delivering audio without reporting an error (it was unplugged,
    /// or its sound server died). Capture has ended; start it again once the device is back.
    #[error("audio device {device:?} stopped delivering audio (no samples for {seconds:.1} s)")]
    Stalled {
        /// The device id.
        device: String,
        /// How long nothing arrived.
        seconds: f64,
    },

    /// The consumer thread could not be started (an OS thread limit).
    #[error("cannot start the capture thread: {reason}")]
    Thread {
        /// The OS error (shown in the message).
        reason: std::io::Error,
    },
}

/// An input device, as [`list_devices`] reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputDevice {
    /// The identifier to pass as the device name (ALSA: the PCM name, e.g. `default`,
    /// `hw:CARD=PCH,DEV=0`).
    pub id: String,
    /// A human-readable name (the first line of the description).
    pub name: String,
    /// Further description lines.
    pub description: Vec<String>,
    /// Whether it is the host's default input device.
    pub is_default: bool,
}

/// Lists the host's input devices (without opening them: some ALSA plugins misbehave when
/// probed).
///
/// # Errors
/// [`CaptureError::Host`] when the audio system cannot be queried.
pub fn list_devices() -> Result<Vec<InputDevice>, CaptureError> {
    let host = cpal::default_host();
    let default_id = host
        .default_input_device()
        .and_then(|d| d.id().ok())
        .map(|id| id.id().to_owned());
    let devices = host
        .input_devices()
        .map_err(|reason| CaptureError::Host { reason })?;
    Ok(devices
        .filter_map(|d| describe(&d, default_id.as_deref()))
        .collect())
}

fn describe(device: &cpal::Device, default_id: Option<&str>) -> Option<InputDevice> {
    let id = device.id().ok()?.id().to_owned();
    let (name, description) = match device.description() {
        Ok(d) => (
            d.name().to_owned(),
            d.extended().skip(1).map(str::to_owned).collect::<Vec<_>>(),
        ),
        Err(_) => (id.clone(), Vec::new()),
    };
    Some(InputDevice {
        is_default: default_id == Some(id.as_str()),
        id,
        name,
        description,
    })
}

/// Picks the device `name` names among `devices`: an exact id, else an exact name (ASCII
/// case-insensitive), else the one device whose id or name contains it.
///
/// # Errors
/// [`CaptureError::DeviceNotFound`] or [`CaptureError::AmbiguousDevice`].
pub fn match_device<'a>(
    devices: &'a [InputDevice],
    name: &str,
) -> Result<&'a InputDevice, CaptureError> {
    if let Some(d) = devices.iter().find(|d| d.id == name) {
        return Ok(d);
    }
    if let Some(d) = devices.iter().find(|d| d.name.eq_ignore_ascii_case(name)) {
        return Ok(d);
    }
    let needle = name.to_lowercase();
    let matches: Vec<&InputDevice> = devices
        .iter()
        .filter(|d| {
            d.id.to_lowercase().contains(&needle) || d.name.to_lowercase().contains(&needle)
        })
        .collect();
    match matches.as_slice() {
        [one] => Ok(one),
        [] => Err(CaptureError::DeviceNotFound {
            name: name.to_owned(),
            available: devices.iter().map(|d| d.id.clone()).collect(),
        }),
        many => Err(CaptureError::AmbiguousDevice {
            name: name.to_owned(),
            matches: many.iter().map(|d| d.id.clone()).collect(),
        }),
    }
}

/// How to capture.
#[derive(Clone, Debug, PartialEq)]
pub struct CaptureConfig {
    /// Device id or name (see [`match_device`]); `None`: the default input device.
    pub device: Option<String>,
    /// Ring capacity in seconds of native audio. Default [`DEFAULT_RING_SECONDS`].
    pub ring_seconds: f64,
    /// End capture with [`CaptureError::Stalled`] when no frame arrives for this long;
    /// `None` waits forever. Default [`DEFAULT_STALL_TIMEOUT`].
    pub stall_timeout: Option<Duration>,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        Self {
            device: None,
            ring_seconds: DEFAULT_RING_SECONDS,
            stall_timeout: Some(DEFAULT_STALL_TIMEOUT),
        }
    }
}

/// What capture opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaptureInfo {
    /// The device id.
    pub device: String,
    /// Its human-readable name.
    pub name: String,
    /// Native sample rate in Hz.
    pub sample_rate: u32,
    /// Native channel count.
    pub channels: u16,
    /// Native sample format, as cpal names it (`i16`, `f32`, ...).
    pub sample_format: String,
}

/// What the consumer thread hands to the sink.
#[derive(Debug)]
pub enum CaptureEvent {
    /// 16 kHz mono samples in `[-1, 1]`, in order, never empty.
    Audio(Vec<f32>),
    /// Frames were dropped since the last report because the ring was full (the sink is too
    /// slow); `total_frames_dropped` counts all so far.
    Overrun {
        /// Native frames dropped since capture started.
        total_frames_dropped: u64,
    },
    /// Capture ended because the device failed; no more events follow.
    Ended(CaptureError),
}

/// Stops a capture from any thread (a Ctrl-C handler, say): the callback stops copying at
/// once, the consumer hands the audio captured so far to the sink and exits (dropping the
/// sink).
#[derive(Clone, Debug)]
pub struct CaptureStopper {
    stop: Arc<AtomicBool>,
    done: Arc<Done>,
}

impl CaptureStopper {
    /// Asks the capture to stop; returns at once.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
    }

    /// Asks the capture to stop and waits, at most `timeout`, until the consumer has handed
    /// everything captured to the sink and exited. Returns whether it did in time (it may
    /// be blocked in a sink that does not take events).
    pub fn stop_and_wait(&self, timeout: Duration) -> bool {
        self.stop();
        self.done.wait(timeout)
    }
}

/// Set when the consumer thread exits (on every path: it is set by a drop guard).
#[derive(Debug, Default)]
struct Done {
    finished: Mutex<bool>,
    signal: Condvar,
}

impl Done {
    fn set(&self) {
        if let Ok(mut finished) = self.finished.lock() {
            *finished = true;
        }
        self.signal.notify_all();
    }

    fn wait(&self, timeout: Duration) -> bool {
        let Ok(finished) = self.finished.lock() else {
            return false;
        };
        self.signal
            .wait_timeout_while(finished, timeout, |finished| !*finished)
            .is_ok_and(|(finished, _)| *finished)
    }
}

/// Marks the consumer as finished when dropped.
struct DoneGuard(Arc<Done>);

impl Drop for DoneGuard {
    fn drop(&mut self) {
        self.0.set();
    }
}

/// Counters of a running capture.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CaptureStats {
    /// Native frames copied into the ring.
    pub frames_captured: u64,
    /// Native frames dropped because the ring was full.
    pub frames_dropped: u64,
    /// Over/underruns cpal reported and recovered from.
    pub xruns: u64,
}

#[derive(Debug, Default)]
struct Counters {
    captured: AtomicU64,
    dropped: AtomicU64,
    xruns: AtomicU64,
}

/// A running capture. Stopping it ([`Capture::stop`], [`CaptureStopper`] or a drop) hands
/// the audio captured so far to the sink, then ends the consumer thread.
pub struct Capture {
    stream: Option<cpal::Stream>,
    stop: Arc<AtomicBool>,
    done: Arc<Done>,
    consumer: Option<JoinHandle<()>>,
    counters: Arc<Counters>,
    info: CaptureInfo,
}

impl std::fmt::Debug for Capture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Capture")
            .field("info", &self.info)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Capture {
    /// Opens the device, starts the stream and the consumer thread. `sink` runs on the
    /// consumer thread for every [`CaptureEvent`]; returning `false` stops delivery (the
    /// stream keeps running until the `Capture` is dropped).
    ///
    /// # Errors
    /// [`CaptureError`] when no device matches, it has no usable configuration or format,
    /// or the stream cannot be opened.
    pub fn start(
        config: &CaptureConfig,
        sink: impl FnMut(CaptureEvent) -> bool + Send + 'static,
    ) -> Result<Self, CaptureError> {
        let host = cpal::default_host();
        let device = find_device(&host, config.device.as_deref())?;
        let described = describe(&device, None);
        let id = described
            .as_ref()
            .map_or_else(|| "unknown".to_owned(), |d| d.id.clone());
        let name = described.map_or_else(|| id.clone(), |d| d.name);
        let supported = device
            .default_input_config()
            .map_err(|reason| CaptureError::Config {
                device: id.clone(),
                reason,
            })?;
        let sample_rate = supported.sample_rate();
        let channels = supported.channels();
        let format = supported.sample_format();
        let converter =
            Converter::new(sample_rate, channels).map_err(|reason| CaptureError::Convert {
                device: id.clone(),
                reason,
            })?;
        let frame = usize::from(channels.max(1));
        let capacity = ((config.ring_seconds.max(0.1) * f64::from(sample_rate)) as usize)
            .max(1)
            .saturating_mul(frame);
        let (producer, consumer) = RingBuffer::<f32>::new(capacity);
        let counters = Arc::new(Counters::default());
        let (err_tx, err_rx) = sync_channel::<cpal::Error>(ERROR_CAPACITY);
        let stream_config = StreamConfig {
            channels,
            sample_rate,
            buffer_size: cpal::BufferSize::Default,
        };
        let stop = Arc::new(AtomicBool::new(false));
        let parts = StreamParts {
            producer,
            stop: Arc::clone(&stop),
            counters: Arc::clone(&counters),
            err_tx,
            frame,
        };
        let stream = match format {
            SampleFormat::I8 => build::<i8>(&device, &stream_config, parts),
            SampleFormat::I16 => build::<i16>(&device, &stream_config, parts),
            SampleFormat::I24 => build::<cpal::I24>(&device, &stream_config, parts),
            SampleFormat::I32 => build::<i32>(&device, &stream_config, parts),
            SampleFormat::I64 => build::<i64>(&device, &stream_config, parts),
            SampleFormat::U8 => build::<u8>(&device, &stream_config, parts),
            SampleFormat::U16 => build::<u16>(&device, &stream_config, parts),
            SampleFormat::U24 => build::<cpal::U24>(&device, &stream_config, parts),
            SampleFormat::U32 => build::<u32>(&device, &stream_config, parts),
            SampleFormat::U64 => build::<u64>(&device, &stream_config, parts),
            SampleFormat::F32 => build::<f32>(&device, &stream_config, parts),
            SampleFormat::F64 => build::<f64>(&device, &stream_config, parts),
            other => {
                return Err(CaptureError::UnsupportedFormat {
                    device: id,
                    format: other.to_string(),
                });
            }
        }
        .map_err(|reason| CaptureError::Open {
            device: id.clone(),
            reason,
        })?;
        let info = CaptureInfo {
            device: id.clone(),
            name,
            sample_rate,
            channels,
            sample_format: format.to_string(),
        };
        let chunk = ((CONSUMER_CHUNK_SECONDS * f64::from(sample_rate)) as usize).max(1) * frame;
        let worker = ConsumerThread {
            consumer,
            converter,
            err_rx,
            counters: Arc::clone(&counters),
            stop: Arc::clone(&stop),
            device: id.clone(),
            frame,
            buffer: vec![0.0; chunk],
            stall_timeout: config.stall_timeout,
        };
        let done = Arc::new(Done::default());
        let guard = DoneGuard(Arc::clone(&done));
        let consumer = std::thread::Builder::new()
            .name("capture".into())
            .spawn(move || {
                let _guard = guard;
                worker.run(sink);
            })
            .map_err(|reason| CaptureError::Thread { reason })?;
        stream.play().map_err(|reason| CaptureError::Open {
            device: id.clone(),
            reason,
        })?;
        Ok(Self {
            stream: Some(stream),
            stop,
            done,
            consumer: Some(consumer),
            counters,
            info,
        })
    }

    /// What was opened.
    pub fn info(&self) -> &CaptureInfo {
        &self.info
    }

    /// A handle that stops this capture from another thread.
    pub fn stopper(&self) -> CaptureStopper {
        CaptureStopper {
            stop: Arc::clone(&self.stop),
            done: Arc::clone(&self.done),
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> CaptureStats {
        CaptureStats {
            frames_captured: self.counters.captured.load(Ordering::Relaxed),
            frames_dropped: self.counters.dropped.load(Ordering::Relaxed),
            xruns: self.counters.xruns.load(Ordering::Relaxed),
        }
    }

    /// Stops capture, waits until the consumer has handed the audio captured so far to the
    /// sink and exited, and closes the stream. Returns the final counters.
    pub fn stop(mut self) -> CaptureStats {
        self.shutdown();
        self.stats()
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(handle) = self.consumer.take() {
            let _ = handle.join();
        }
        drop(self.stream.take());
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn find_device(host: &cpal::Host, name: Option<&str>) -> Result<cpal::Device, CaptureError> {
    let Some(name) = name else {
        return host
            .default_input_device()
            .ok_or(CaptureError::NoDefaultDevice);
    };
    let devices: Vec<cpal::Device> = host
        .input_devices()
        .map_err(|reason| CaptureError::Host { reason })?
        .collect();
    let described: Vec<InputDevice> = devices.iter().filter_map(|d| describe(d, None)).collect();
    let wanted = match_device(&described, name)?.id.clone();
    devices
        .into_iter()
        .find(|d| d.id().is_ok_and(|id| id.id() == wanted))
        .ok_or_else(|| CaptureError::DeviceNotFound {
            name: name.to_owned(),
            available: described.iter().map(|d| d.id.clone()).collect(),
        })
}

/// What the data and error callbacks own.
struct StreamParts {
    producer: Producer<f32>,
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
    err_tx: SyncSender<cpal::Error>,
    frame: usize,
}

fn build<T>(
    device: &cpal::Device,
    config: &StreamConfig,
    parts: StreamParts,
) -> Result<cpal::Stream, cpal::Error>
where
    T: SizedSample + Send + 'static,
    f32: FromSample<T>,
{
    let StreamParts {
        mut producer,
        stop,
        counters,
        err_tx,
        frame,
    } = parts;
    device.build_input_stream::<T, _, _>(
        *config,
        move |data: &[T], _: &cpal::InputCallbackInfo| {
            // Stopped: the consumer has taken or is taking its last pass; copy nothing more
            // (and count nothing as dropped).
            if !stop.load(Ordering::Relaxed) {
                push_frames(&mut producer, data, frame, &counters);
            }
        },
        move |error| {
            // Full: drop the newest; the queued errors already tell the consumer.
            let _ = err_tx.try_send(error);
        },
        None,
    )
}

/// The callback's whole job: convert to `f32` and copy the whole frames that fit into the
/// ring; count the frames that do not. No allocation, no lock, no panic.
fn push_frames<T>(producer: &mut Producer<f32>, data: &[T], frame: usize, counters: &Counters)
where
    T: Sample,
    f32: FromSample<T>,
{
    let frame = frame.max(1);
    let frames_in = data.len() / frame;
    let fit = (producer.slots() / frame).min(frames_in);
    if fit > 0
        && let Ok(chunk) = producer.write_chunk_uninit(fit * frame)
    {
        chunk.fill_from_iter(data.iter().map(|s| s.to_sample::<f32>()));
    }
    counters.captured.fetch_add(fit as u64, Ordering::Relaxed);
    if fit < frames_in {
        counters
            .dropped
            .fetch_add((frames_in - fit) as u64, Ordering::Relaxed);
    }
}

struct ConsumerThread {
    consumer: Consumer<f32>,
    converter: Converter,
    err_rx: Receiver<cpal::Error>,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    device: String,
    frame: usize,
    buffer: Vec<f32>,
    stall_timeout: Option<Duration>,
}

impl ConsumerThread {
    fn run(mut self, mut sink: impl FnMut(CaptureEvent) -> bool) {
        let mut out = Vec::new();
        let mut reported_dropped = 0u64;
        let mut last_captured = 0u64;
        let mut last_progress = Instant::now();
        loop {
            // Read the flag before draining: everything pushed before the stream stopped
            // is in the ring by now and this pass takes it.
            let stopping = self.stop.load(Ordering::Acquire);
            loop {
                match self.err_rx.try_recv() {
                    Ok(error) if error.kind() == cpal::ErrorKind::Xrun => {
                        self.counters.xruns.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(error) => {
                        self.drain(&mut out);
                        if !out.is_empty() {
                            sink(CaptureEvent::Audio(std::mem::take(&mut out)));
                        }
                        sink(CaptureEvent::Ended(CaptureError::Stream {
                            device: self.device.clone(),
                            reason: error,
                        }));
                        return;
                    }
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                }
            }
            self.drain(&mut out);
            let dropped = self.counters.dropped.load(Ordering::Relaxed);
            if dropped > reported_dropped {
                reported_dropped = dropped;
                if !sink(CaptureEvent::Overrun {
                    total_frames_dropped: dropped,
                }) {
                    return;
                }
            }
            if !out.is_empty() && !sink(CaptureEvent::Audio(std::mem::take(&mut out))) {
                return;
            }
            let captured = self.counters.captured.load(Ordering::Relaxed)
                + self.counters.dropped.load(Ordering::Relaxed);
            if captured != last_captured {
                last_captured = captured;
                last_progress = Instant::now();
            } else if let Some(limit) = self.stall_timeout
                && !stopping
                && last_progress.elapsed() >= limit
            {
                sink(CaptureEvent::Ended(CaptureError::Stalled {
                    device: self.device.clone(),
                    seconds: last_progress.elapsed().as_secs_f64(),
                }));
                return;
            }
            if stopping {
                let tail = self.converter.finish();
                if !tail.is_empty() {
                    sink(CaptureEvent::Audio(tail));
                }
                return;
            }
            std::thread::sleep(CONSUMER_POLL);
        }
    }

    /// Moves every whole frame in the ring through the converter into `out`.
    fn drain(&mut self, out: &mut Vec<f32>) {
        loop {
            let n = (self.consumer.slots().min(self.buffer.len()) / self.frame) * self.frame;
            if n == 0 {
                return;
            }
            let Ok(chunk) = self.consumer.read_chunk(n) else {
                return;
            };
            let (a, b) = chunk.as_slices();
            self.buffer[..a.len()].copy_from_slice(a);
            self.buffer[a.len()..a.len() + b.len()].copy_from_slice(b);
            chunk.commit_all();
            self.converter.push_into(&self.buffer[..n], out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(id: &str, name: &str) -> InputDevice {
        InputDevice {
            id: id.into(),
            name: name.into(),
            description: Vec::new(),
            is_default: false,
        }
    }

    #[test]
    fn devices_match_by_id_then_name_then_unique_substring() -> Result<(), CaptureError> {
        let devices = [
            device("default", "Default ALSA Output"),
            device("hw:CARD=PCH,DEV=0", "HDA Intel PCH, ALC892 Analog"),
            device("fixture_mic", "Fixture microphone"),
        ];
        assert_eq!(match_device(&devices, "default")?.id, "default");
        assert_eq!(
            match_device(&devices, "fixture microphone")?.id,
            "fixture_mic"
        );
        assert_eq!(match_device(&devices, "ALC892")?.id, "hw:CARD=PCH,DEV=0");
        assert!(matches!(
            match_device(&devices, "usb"),
            Err(CaptureError::DeviceNotFound { available, .. }) if available.len() == 3
        ));
        assert!(matches!(
            match_device(&devices, "a"),
            Err(CaptureError::AmbiguousDevice { .. })
        ));
        Ok(())
    }

    #[test]
    fn callback_pushes_whole_frames_and_counts_the_rest() {
        let (mut producer, mut consumer) = RingBuffer::<f32>::new(5);
        let counters = Counters::default();
        // Stereo i16: 4 frames offered, room for 2 whole frames (5 slots).
        let data: [i16; 8] = [0, 16_384, -16_384, 0, 1, 2, 3, 4];
        push_frames(&mut producer, &data, 2, &counters);
        assert_eq!(counters.captured.load(Ordering::Relaxed), 2);
        assert_eq!(counters.dropped.load(Ordering::Relaxed), 2);
        let got: Vec<f32> = std::iter::from_fn(|| consumer.pop().ok()).collect();
        assert_eq!(got, [0.0, 0.5, -0.5, 0.0]);
    }

    /// A consumer thread over a ring the test fills, collecting what it hands on.
    struct Harness {
        producer: Producer<f32>,
        err_tx: SyncSender<cpal::Error>,
        counters: Arc<Counters>,
        stop: Arc<AtomicBool>,
        events: std::sync::mpsc::Receiver<CaptureEvent>,
        thread: JoinHandle<()>,
    }

    fn harness(rate: u32, channels: u16, stall: Option<Duration>) -> Result<Harness, AudioError> {
        let (producer, consumer) = RingBuffer::<f32>::new(rate as usize * usize::from(channels));
        let (err_tx, err_rx) = sync_channel(ERROR_CAPACITY);
        let counters = Arc::new(Counters::default());
        let stop = Arc::new(AtomicBool::new(false));
        let worker = ConsumerThread {
            consumer,
            converter: Converter::new(rate, channels)?,
            err_rx,
            counters: Arc::clone(&counters),
            stop: Arc::clone(&stop),
            device: "test".into(),
            frame: usize::from(channels),
            buffer: vec![0.0; 1_000],
            stall_timeout: stall,
        };
        let (tx, events) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || worker.run(move |e| tx.send(e).is_ok()));
        Ok(Harness {
            producer,
            err_tx,
            counters,
            stop,
            events,
            thread,
        })
    }

    fn collect(h: Harness) -> Vec<CaptureEvent> {
        let _ = h.thread.join();
        h.events.try_iter().collect()
    }

    fn audio_len(events: &[CaptureEvent]) -> usize {
        events
            .iter()
            .map(|e| match e {
                CaptureEvent::Audio(a) => a.len(),
                _ => 0,
            })
            .sum()
    }

    #[test]
    fn consumer_converts_everything_and_delivers_the_tail_on_stop() -> Result<(), AudioError> {
        // 48 kHz stereo in, 16 kHz mono out: 0.5 s in, 0.5 s out once the tail is flushed.
        let mut h = harness(48_000, 2, None)?;
        let frames = 24_000;
        for chunk in vec![0.25f32; frames * 2].chunks(960) {
            push_frames(&mut h.producer, chunk, 2, &h.counters);
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(CONSUMER_POLL * 3);
        h.stop.store(true, Ordering::Release);
        let events = collect(h);
        assert_eq!(audio_len(&events), 8_000);
        assert!(
            events
                .iter()
                .all(|e| matches!(e, CaptureEvent::Audio(a) if !a.is_empty()))
        );
        Ok(())
    }

    #[test]
    fn xruns_are_counted_and_other_stream_errors_end_capture() -> Result<(), AudioError> {
        let h = harness(16_000, 1, None)?;
        let _ = h.err_tx.send(cpal::Error::new(cpal::ErrorKind::Xrun));
        std::thread::sleep(CONSUMER_POLL * 3);
        assert_eq!(h.counters.xruns.load(Ordering::Relaxed), 1);
        let _ = h.err_tx.send(cpal::Error::with_message(
            cpal::ErrorKind::DeviceNotAvailable,
            "unplugged",
        ));
        let events = collect(h);
        assert!(
            matches!(
                events.last(),
                Some(CaptureEvent::Ended(CaptureError::Stream { device, reason }))
                    if device == "test" && reason.to_string() == "unplugged"
            ),
            "{events:?}"
        );
        Ok(())
    }

    #[test]
    fn a_silent_device_ends_capture_as_stalled() -> Result<(), AudioError> {
        let h = harness(16_000, 1, Some(Duration::from_millis(50)))?;
        let events = collect(h);
        assert!(
            matches!(
                events.as_slice(),
                [CaptureEvent::Ended(CaptureError::Stalled { seconds, .. })] if *seconds >= 0.05
            ),
            "{events:?}"
        );
        Ok(())
    }

    #[test]
    fn overruns_are_reported_with_the_running_total() -> Result<(), AudioError> {
        let mut h = harness(16_000, 1, None)?;
        // The ring holds 1 s; offer 1.5 s at once.
        push_frames(&mut h.producer, &vec![0.0f32; 24_000], 1, &h.counters);
        std::thread::sleep(CONSUMER_POLL * 3);
        h.stop.store(true, Ordering::Release);
        let events = collect(h);
        assert!(
            events.iter().any(|e| matches!(
                e,
                CaptureEvent::Overrun {
                    total_frames_dropped: 8_000
                }
            )),
            "{events:?}"
        );
        assert_eq!(audio_len(&events), 16_000);
        Ok(())
    }

    #[test]
    fn callback_converts_unsigned_and_float_formats() {
        let (mut producer, mut consumer) = RingBuffer::<f32>::new(8);
        let counters = Counters::default();
        push_frames(&mut producer, &[32_768u16, 0, 49_152], 1, &counters);
        push_frames(&mut producer, &[0.25f32, -1.0], 1, &counters);
        let got: Vec<f32> = std::iter::from_fn(|| consumer.pop().ok()).collect();
        assert_eq!(got, [0.0, -1.0, 0.5, 0.25, -1.0]);
        assert_eq!(counters.dropped.load(Ordering::Relaxed), 0);
    }
}
