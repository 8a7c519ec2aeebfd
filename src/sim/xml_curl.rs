//! The simulator's FreeSWITCH-facing registry: device registrations checked against the
//! mod_xml_curl directory, and gateway registration states.

use std::time::Instant;

/// One device registration.
#[derive(Debug, Clone)]
pub struct Registration {
    pub user: String,
    pub contact: String,
    pub expires: u32,
}

/// What `sofia status gateway` reports about one gateway.
#[derive(Debug, Clone)]
pub struct GatewayStatus {
    pub name: String,
    pub realm: String,
    pub proxy: String,
    pub expires: u32,
    pub state: String,
    pub up_since: Option<Instant>,
}

impl GatewayStatus {
    fn is_up(&self) -> bool {
        self.state == "REGED" || self.state == "NOREG"
    }

    fn uptime(&self) -> std::time::Duration {
        self.up_since.map(|t| t.elapsed()).unwrap_or_default()
    }

    /// The tab-separated `sofia status gateway <name>` output.
    pub fn text_status(&self) -> String {
        let rule = "=".repeat(97);
        let status = if self.is_up() { "UP" } else { "DOWN" };
        let rows = [
            ("Name    ", self.name.clone()),
            ("Profile ", "external".into()),
            ("Scheme  ", "Digest".into()),
            ("Realm   ", self.realm.clone()),
            ("Username", self.name.clone()),
            ("Password", "yes".into()),
            ("From    ", format!("<sip:{}@{}>", self.name, self.proxy)),
            (
                "Contact ",
                format!(
                    "<sip:gw+{}@127.0.0.1:5080;transport=udp;gw={}>",
                    self.name, self.name
                ),
            ),
            ("Exten   ", self.name.clone()),
            ("To      ", format!("sip:{}@{}", self.name, self.proxy)),
            ("Proxy   ", format!("sip:{}", self.proxy)),
            ("Context ", "public".into()),
            ("Expires ", self.expires.to_string()),
            ("Freq    ", self.expires.to_string()),
            ("Ping    ", "0".into()),
            ("PingFreq", "0".into()),
            ("PingTime", "0.00".into()),
            ("PingState", "0/0/0".into()),
            ("State   ", self.state.clone()),
            ("Status  ", status.into()),
            ("Uptime  ", format!("{}s", self.uptime().as_secs())),
            ("CallsIN ", "0".into()),
            ("CallsOUT", "0".into()),
            ("FailedCallsIN", "0".into()),
            ("FailedCallsOUT", "0".into()),
        ];
        let mut out = format!("{rule}\n");
        for (key, value) in rows {
            out.push_str(&format!("{key}\t{value}\n"));
        }
        out.push_str(&rule);
        out.push('\n');
        out
    }

    /// The `sofia xmlstatus gateway <name>` output, values XML-escaped.
    pub fn xml_status(&self) -> String {
        use quick_xml::escape::escape;
        let status = if self.is_up() { "UP" } else { "DOWN" };
        let from = format!("<sip:{}@{}>", self.name, self.proxy);
        let contact = format!(
            "<sip:gw+{}@127.0.0.1:5080;transport=udp;gw={}>",
            self.name, self.name
        );
        let to = format!("sip:{}@{}", self.name, self.proxy);
        let proxy = format!("sip:{}", self.proxy);
        let rows: [(&str, String); 25] = [
            ("name", escape(&self.name).into_owned()),
            ("profile", "external".into()),
            ("scheme", "Digest".into()),
            ("realm", escape(&self.realm).into_owned()),
            ("username", escape(&self.name).into_owned()),
            ("password", "yes".into()),
            ("from", escape(&from).into_owned()),
            ("contact", escape(&contact).into_owned()),
            ("exten", escape(&self.name).into_owned()),
            ("to", escape(&to).into_owned()),
            ("proxy", escape(&proxy).into_owned()),
            ("context", "public".into()),
            ("expires", self.expires.to_string()),
            ("freq", self.expires.to_string()),
            ("ping", "0".into()),
            ("pingfreq", "0".into()),
            ("pingmin", "0".into()),
            ("pingcount", "0".into()),
            ("pingmax", "0".into()),
            ("pingtime", "0.00".into()),
            ("pinging", "0".into()),
            ("state", escape(&self.state).into_owned()),
            ("status", status.into()),
            ("uptime-usec", self.uptime().as_micros().to_string()),
            ("calls-in", "0".into()),
        ];
        let mut out =
            String::from("<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?>\n  <gateway>\n");
        for (tag, value) in rows.iter().chain(
            [
                ("calls-out", "0".to_owned()),
                ("failed-calls-in", "0".to_owned()),
                ("failed-calls-out", "0".to_owned()),
            ]
            .iter(),
        ) {
            out.push_str(&format!("    <{tag}>{value}</{tag}>\n"));
        }
        out.push_str("  </gateway>\n");
        out
    }
}
