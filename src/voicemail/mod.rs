//! Recording intake and speech-to-text: WAV files in, transcripts with per-word confidence out.
//!
//! The spool calls [`Transcriber::transcribe`] for each voicemail job; the transcript then goes
//! into the mail and the calendar event. Recognition runs on libvosk through the `vosk` crate,
//! behind the cargo feature `stt`, so the default build needs no native library. Models are
//! loaded once per language and kept. Invariant: a missing library, a missing model or an
//! unreadable model yields "no transcript" (`Ok(None)`), never a lost voicemail.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The `stt` section of the settings file (Vosk models per language).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SttSettings {
    /// A Vosk model folder per language code: `stt.models.ko = "/srv/vosk/model-ko"`.
    pub models: BTreeMap<String, PathBuf>,
    /// Optional phrases per language: recognition is then limited to them (`stt.grammar.ko`).
    pub grammar: BTreeMap<String, Vec<String>>,
}

/// What was said, with how sure the recogniser is of each word.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Transcript {
    /// The language whose model produced it.
    pub language: String,
    pub text: String,
    pub words: Vec<Word>,
}

/// One recognised word and its place in the recording.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Word {
    pub word: String,
    /// Seconds from the start of the recording.
    pub start: f32,
    pub end: f32,
    /// 0.0 to 1.0.
    pub confidence: f32,
}

impl Transcript {
    /// The mean word confidence, or `None` for an empty transcript.
    pub fn mean_confidence(&self) -> Option<f32> {
        if self.words.is_empty() {
            return None;
        }
        Some(self.words.iter().map(|w| w.confidence).sum::<f32>() / self.words.len() as f32)
    }
}

/// Speech-to-text errors; a recording that cannot be read is the usual one.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: cannot read the recording: {source} (expected a 16-bit PCM WAV file)")]
    Wav {
        path: PathBuf,
        #[source]
        source: hound::Error,
    },
    #[error("{path}: unsupported recording format: {what} (expected 16-bit PCM WAV)")]
    Format { path: PathBuf, what: String },
    #[error("{path}: the speech recogniser failed: {what}")]
    Recognizer { path: PathBuf, what: String },
}

/// A recording as 16-bit mono samples at its own rate.
pub struct Pcm {
    pub sample_rate: u32,
    pub samples: Vec<i16>,
}

/// Reads a WAV file as mono 16-bit samples (channels are averaged), keeping its sample rate.
pub fn read_wav(path: &Path) -> Result<Pcm, Error> {
    let wav_error = |source| Error::Wav {
        path: path.to_owned(),
        source,
    };
    let mut reader = hound::WavReader::open(path).map_err(wav_error)?;
    let spec = reader.spec();
    if spec.sample_format != hound::SampleFormat::Int || spec.bits_per_sample != 16 {
        return Err(Error::Format {
            path: path.to_owned(),
            what: format!("{:?} {} bits", spec.sample_format, spec.bits_per_sample),
        });
    }
    let channels = usize::from(spec.channels.max(1));
    let interleaved = reader
        .samples::<i16>()
        .collect::<Result<Vec<i16>, _>>()
        .map_err(wav_error)?;
    let samples = if channels == 1 {
        interleaved
    } else {
        interleaved
            .chunks(channels)
            .map(|frame| {
                let sum: i32 = frame.iter().map(|&s| i32::from(s)).sum();
                // The mean of i16 values always fits an i16.
                (sum / frame.len() as i32) as i16
            })
            .collect()
    };
    Ok(Pcm {
        sample_rate: spec.sample_rate,
        samples,
    })
}

/// The speech recogniser: one model per language, loaded on first use and kept.
pub struct Transcriber {
    settings: SttSettings,
    #[cfg(feature = "stt")]
    models: std::sync::Mutex<BTreeMap<String, std::sync::Arc<vosk::Model>>>,
}

impl Transcriber {
    pub fn new(settings: SttSettings) -> Transcriber {
        #[cfg(feature = "stt")]
        vosk::set_log_level(vosk::LogLevel::Error);
        Transcriber {
            settings,
            #[cfg(feature = "stt")]
            models: std::sync::Mutex::new(BTreeMap::new()),
        }
    }

    /// Whether this build can transcribe at all (feature `stt`).
    pub fn available() -> bool {
        cfg!(feature = "stt")
    }

    /// The settings key for a call language: "ko-KR" uses the `ko` model unless `ko-KR` exists.
    fn language_key(&self, language: Option<&str>) -> Option<String> {
        let language = language?.trim().to_ascii_lowercase();
        if self.settings.models.contains_key(&language) {
            return Some(language);
        }
        let primary = language.split(['-', '_']).next()?.to_owned();
        self.settings
            .models
            .contains_key(&primary)
            .then_some(primary)
    }

    /// Why a call in this language gets no transcript, or `None` when it will get one.
    pub fn unavailable_reason(&self, language: Option<&str>) -> Option<String> {
        if !Self::available() {
            return Some("this patchbay was built without speech-to-text".to_owned());
        }
        match (language, self.language_key(language)) {
            (_, Some(_)) => None,
            (Some(language), None) => Some(format!("no speech-to-text model for \"{language}\"")),
            (None, None) => Some("the call's language is unknown".to_owned()),
        }
    }

    /// Loads the model for this language now (at startup), so the first voicemail does not
    /// wait for it. Returns whether a model is ready.
    #[allow(clippy::needless_return)] // one of two cfg branches
    pub async fn preload(self: &std::sync::Arc<Self>, language: &str) -> bool {
        #[cfg(feature = "stt")]
        {
            let Some(key) = self.language_key(Some(language)) else {
                return false;
            };
            let this = std::sync::Arc::clone(self);
            return tokio::task::spawn_blocking(move || this.model(&key).is_some())
                .await
                .unwrap_or(false);
        }
        #[cfg(not(feature = "stt"))]
        {
            let _ = language;
            false
        }
    }

    /// Transcribes a recording with the model for `language`, off the async threads.
    /// `Ok(None)`: no transcript can be made (no library, no model); the caller says so.
    #[allow(clippy::needless_return)] // one of two cfg branches
    pub async fn transcribe(
        self: &std::sync::Arc<Self>,
        recording: &Path,
        language: Option<&str>,
    ) -> Result<Option<Transcript>, Error> {
        #[cfg(feature = "stt")]
        {
            let Some(key) = self.language_key(language) else {
                return Ok(None);
            };
            let this = std::sync::Arc::clone(self);
            let path = recording.to_owned();
            return tokio::task::spawn_blocking(move || this.transcribe_blocking(&path, &key))
                .await
                .map_err(|join| Error::Recognizer {
                    path: recording.to_owned(),
                    what: join.to_string(),
                })?;
        }
        #[cfg(not(feature = "stt"))]
        {
            let _ = (recording, language);
            Ok(None)
        }
    }

    #[cfg(feature = "stt")]
    fn model(&self, key: &str) -> Option<std::sync::Arc<vosk::Model>> {
        // Loading takes seconds; holding the lock meanwhile stops a second load of the same
        // model, and nothing async waits on this lock (callers are blocking threads).
        let mut models = self.models.lock().ok()?;
        if let Some(model) = models.get(key) {
            return Some(std::sync::Arc::clone(model));
        }
        let folder = self.settings.models.get(key)?;
        let Some(model) = vosk::Model::new(folder.to_string_lossy()) else {
            tracing::error!(
                "{}: cannot load the speech-to-text model for \"{key}\" (expected a Vosk model folder)",
                folder.display()
            );
            return None;
        };
        let model = std::sync::Arc::new(model);
        models.insert(key.to_owned(), std::sync::Arc::clone(&model));
        Some(model)
    }

    #[cfg(feature = "stt")]
    fn transcribe_blocking(&self, path: &Path, key: &str) -> Result<Option<Transcript>, Error> {
        let pcm = read_wav(path)?;
        let Some(model) = self.model(key) else {
            return Ok(None);
        };
        let rate = pcm.sample_rate as f32;
        let phrases: Vec<String> = self
            .settings
            .grammar
            .get(key)
            .map(|phrases| {
                phrases
                    .iter()
                    // The phrases are written into a JSON list by the vosk crate, unescaped.
                    .map(|p| p.replace(['"', '\\'], " "))
                    .collect()
            })
            .unwrap_or_default();
        let recognizer = if phrases.is_empty() {
            vosk::Recognizer::new(&model, rate)
        } else {
            vosk::Recognizer::new_with_grammar(&model, rate, &phrases)
        };
        let mut recognizer = recognizer.ok_or_else(|| Error::Recognizer {
            path: path.to_owned(),
            what: format!("cannot create a recogniser at {} Hz", pcm.sample_rate),
        })?;
        recognizer.set_words(true);

        let mut transcript = Transcript {
            language: key.to_owned(),
            ..Transcript::default()
        };
        // Vosk closes an utterance at each silence; its words are only returned then.
        for chunk in pcm.samples.chunks(8000) {
            let state = recognizer
                .accept_waveform(chunk)
                .map_err(|e| Error::Recognizer {
                    path: path.to_owned(),
                    what: e.to_string(),
                })?;
            if state == vosk::DecodingState::Finalized {
                append(&mut transcript, recognizer.result());
            }
        }
        append(&mut transcript, recognizer.final_result());
        Ok(Some(transcript))
    }
}

#[cfg(feature = "stt")]
fn append(transcript: &mut Transcript, result: vosk::CompleteResult<'_>) {
    let Some(single) = result.single() else {
        return;
    };
    let text = single.text.trim();
    if text.is_empty() {
        return;
    }
    if !transcript.text.is_empty() {
        transcript.text.push(' ');
    }
    transcript.text.push_str(text);
    transcript
        .words
        .extend(single.result.iter().map(|word| Word {
            word: word.word.to_owned(),
            start: word.start,
            end: word.end,
            confidence: word.conf,
        }));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_wav(path: &Path, rate: u32, channels: u16, samples: &[i16]) {
        let spec = hound::WavSpec {
            channels,
            sample_rate: rate,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut writer = hound::WavWriter::create(path, spec).unwrap();
        for &s in samples {
            writer.write_sample(s).unwrap();
        }
        writer.finalize().unwrap();
    }

    #[test]
    fn wav_keeps_its_rate_and_stereo_is_averaged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.wav");
        write_wav(&path, 8000, 2, &[100, 300, -50, -150]);
        let pcm = read_wav(&path).unwrap();
        assert_eq!(pcm.sample_rate, 8000);
        assert_eq!(pcm.samples, vec![200, -100]);
    }

    #[test]
    fn garbage_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.wav");
        std::fs::write(&path, b"not a wav").unwrap();
        let message = read_wav(&path).err().unwrap().to_string();
        assert!(
            message.starts_with(&format!("{}: ", path.display())),
            "{message}"
        );
        assert!(message.contains("expected a 16-bit PCM WAV"), "{message}");
    }

    #[test]
    fn language_falls_back_to_the_primary_subtag() {
        let mut settings = SttSettings::default();
        settings.models.insert("ko".into(), "/nowhere".into());
        let transcriber = Transcriber::new(settings);
        assert_eq!(
            transcriber.language_key(Some("ko-KR")).as_deref(),
            Some("ko")
        );
        assert_eq!(transcriber.language_key(Some("fr")), None);
        assert_eq!(transcriber.language_key(None), None);
        assert!(transcriber.unavailable_reason(Some("fr")).is_some());
    }
}
