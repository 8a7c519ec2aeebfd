//! The calendar call log: iCalendar events, the CalDAV client and the local vdir backend.

use serde::Deserialize;

/// The `calendar` section of the settings file (CalDAV or a local vdir).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct CalendarSettings {}
