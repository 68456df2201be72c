//! The blocking floor: the same length-prefixed echo as
//! [`raw_tokio`](super::raw_tokio), on std sockets with a thread per
//! connection on both sides and no async runtime anywhere. For one caller
//! this is the lowest latency a TCP round trip on this machine allows.

use std::io::{BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use anyhow::{bail, Context as _};

use super::raw_tokio::{check_reply, MAX_FRAME, READ_BUFFER};
use crate::driver::BlockingCaller;
use crate::workload::{self, Cell};

/// Serve the echo on `listener`: a thread per connection.
pub(crate) fn serve(listener: TcpListener) -> anyhow::Result<()> {
    loop {
        let (stream, _) = listener.accept().context("accept")?;
        std::thread::Builder::new().name("echo".into()).spawn(move || {
            // A connection ends with an error when the caller hangs up.
            let _ = echo_connection(stream);
        })?;
    }
}

fn echo_connection(stream: TcpStream) -> anyhow::Result<()> {
    stream.set_nodelay(true)?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::with_capacity(READ_BUFFER, stream);
    let mut frame = Vec::new();
    loop {
        read_frame(&mut reader, &mut frame)?;
        writer.write_all(&frame)?;
    }
}

/// Read one frame (length prefix included) into `frame`.
fn read_frame(stream: &mut impl Read, frame: &mut Vec<u8>) -> anyhow::Result<()> {
    let mut prefix = [0; 4];
    stream.read_exact(&mut prefix)?;
    let len = u32::from_be_bytes(prefix) as usize;
    if len > MAX_FRAME {
        bail!("frame of {len} bytes is over the {MAX_FRAME}-byte limit");
    }
    frame.clear();
    frame.extend_from_slice(&prefix);
    frame.resize(4 + len, 0);
    stream.read_exact(&mut frame[4..])?;
    Ok(())
}

/// One caller: its own connection (a reader and a writer handle on it).
pub(crate) struct Caller {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    request: Vec<u8>,
    reply: Vec<u8>,
    id: u64,
}

/// Open one connection per caller. A read that waits longer than `timeout`
/// fails, so a stalled caller thread ends by itself.
pub(crate) fn callers(addr: SocketAddr, cell: Cell, timeout: Duration) -> anyhow::Result<Vec<Caller>> {
    let body = cell.payload + workload::RAW_EXTRA;
    let mut request = Vec::with_capacity(4 + body);
    request.extend_from_slice(&u32::try_from(body).context("payload too large")?.to_be_bytes());
    request.extend_from_slice(&[0; 8]); // the id
    request.extend_from_slice(&workload::payload(body - 8));
    let mut callers = Vec::with_capacity(cell.callers);
    for i in 0..cell.callers {
        let stream = TcpStream::connect_timeout(&addr, timeout).with_context(|| format!("cannot connect to {addr}"))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        callers.push(Caller {
            writer: stream.try_clone()?,
            reader: BufReader::with_capacity(READ_BUFFER, stream),
            request: request.clone(),
            reply: Vec::with_capacity(request.len()),
            id: workload::first_id(i),
        });
    }
    Ok(callers)
}

impl BlockingCaller for Caller {
    fn call(&mut self) -> anyhow::Result<()> {
        self.id += 1;
        self.request[4..12].copy_from_slice(&self.id.to_le_bytes());
        self.writer.write_all(&self.request).context("send")?;
        read_frame(&mut self.reader, &mut self.reply).context("receive")?;
        check_reply(self.id, &self.request, &self.reply)
    }
}
