//! The calendar call log: iCalendar events, the CalDAV client and the local vdir backend.
