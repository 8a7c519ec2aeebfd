//! Recording intake and speech-to-text.

use serde::Deserialize;

/// The `stt` section of the settings file (Vosk models per language).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct SttSettings {}
