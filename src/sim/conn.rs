//! The only owner of a simulator socket: reads client commands with the ESL frame decoder and
//! writes frames, applying the fault injection (slow replies, frames split into small writes).

use std::sync::Arc;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use crate::freeswitch::esl::frame::{self, Frame, Pending};

use super::Inner;

/// Why a connection stopped reading.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("{0}")]
    Frame(#[from] frame::Error),
    #[error("peer closed the connection in the middle of a frame ({0} bytes buffered)")]
    Truncated(usize),
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
}

pub(crate) struct Conn {
    pub(crate) id: u64,
    inner: Arc<Inner>,
    reader: OwnedReadHalf,
    writer: OwnedWriteHalf,
    buf: BytesMut,
    /// Offset up to which the buffer holds no header-block terminator, so a slowly arriving
    /// large header block is scanned once, not once per read.
    scanned: usize,
    /// Total bytes of the frame being received, once its header block is complete.
    needed: Option<usize>,
}

impl Conn {
    pub(crate) fn new(stream: TcpStream, inner: Arc<Inner>, id: u64) -> Self {
        let _ = stream.set_nodelay(true);
        let (reader, writer) = stream.into_split();
        Self {
            id,
            inner,
            reader,
            writer,
            buf: BytesMut::with_capacity(8192),
            scanned: 0,
            needed: None,
        }
    }

    /// Reads the next client command; `Ok(None)` on a clean close. Cancel-safe: partial data
    /// stays in the buffer.
    pub(crate) async fn read_command(&mut self) -> Result<Option<Frame>, ConnError> {
        loop {
            if let Some(frame) = self.try_parse()? {
                return Ok(Some(frame));
            }
            self.buf.reserve(64 * 1024);
            let read = self.reader.read_buf(&mut self.buf).await?;
            if read == 0 {
                let leftover = self
                    .buf
                    .iter()
                    .filter(|b| !matches!(b, b'\r' | b'\n'))
                    .count();
                return if leftover == 0 {
                    Ok(None)
                } else {
                    Err(ConnError::Truncated(self.buf.len()))
                };
            }
        }
    }

    fn try_parse(&mut self) -> Result<Option<Frame>, ConnError> {
        // Blank lines between commands are skipped, as FreeSWITCH does.
        if self.needed.is_none() {
            let blanks = self
                .buf
                .iter()
                .take_while(|b| matches!(b, b'\r' | b'\n'))
                .count();
            let blanks = if self.buf.get(blanks.saturating_sub(1)) == Some(&b'\r') {
                blanks - 1
            } else {
                blanks
            };
            if blanks > 0 {
                self.buf.advance(blanks);
                self.scanned = 0;
            }
        }
        match self.needed {
            Some(total) if self.buf.len() < total => return Ok(None),
            Some(_) => {}
            None => {
                let from = self.scanned.saturating_sub(3);
                if !has_blank_line(&self.buf[from..]) {
                    if self.buf.len() > frame::MAX_HEADER_BYTES {
                        return Err(frame::Error::HeadersTooLarge.into());
                    }
                    self.scanned = self.buf.len();
                    return Ok(None);
                }
            }
        }
        match Frame::pending(&self.buf)? {
            Pending::Complete(_) => {
                let Some((frame, used)) = Frame::parse_command(&self.buf)? else {
                    return Ok(None);
                };
                self.buf.advance(used);
                self.scanned = 0;
                self.needed = None;
                Ok(Some(frame))
            }
            Pending::Bytes(total) => {
                self.needed = Some(total);
                Ok(None)
            }
            Pending::Headers => {
                self.scanned = self.buf.len();
                Ok(None)
            }
        }
    }

    /// Writes a reply, after the configured slow-reply delay.
    pub(crate) async fn reply(&mut self, frame: &Frame) -> std::io::Result<()> {
        let delay = self.inner.faults().slow_reply;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        self.write(&frame.to_wire()).await
    }

    /// Writes bytes, split into small writes when the fault injection asks for it.
    pub(crate) async fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self.inner.faults().split_writes {
            Some(chunk) if chunk > 0 => {
                for piece in bytes.chunks(chunk) {
                    self.writer.write_all(piece).await?;
                    self.writer.flush().await?;
                    tokio::task::yield_now().await;
                }
                Ok(())
            }
            _ => self.writer.write_all(bytes).await,
        }
    }

    pub(crate) async fn shutdown(&mut self) {
        let _ = self.writer.shutdown().await;
    }
}

fn has_blank_line(buf: &[u8]) -> bool {
    buf.windows(2).any(|w| w == b"\n\n") || buf.windows(3).any(|w| w == b"\n\r\n")
}
