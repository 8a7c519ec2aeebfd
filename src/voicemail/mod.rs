//! Recording intake and speech-to-text.
