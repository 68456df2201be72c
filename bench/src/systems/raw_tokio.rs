//! The async floor: a length-prefixed echo on tokio with no framework, one
//! connection per caller (so it has none of the multiplexing work the
//! frameworks do on one shared connection).
//!
//! A frame is a 4-byte big-endian length and that many bytes: the payload
//! plus [`RAW_EXTRA`](workload::RAW_EXTRA), the first 8 of which carry the
//! call's id. Reads are buffered (64 KiB), each frame is written with one
//! `write_all`, and `TCP_NODELAY` is on at both ends.

use std::net::SocketAddr;

use anyhow::{bail, Context as _};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::driver::AsyncCaller;
use crate::workload::{self, Cell};

/// Largest frame either side accepts.
pub(crate) const MAX_FRAME: usize = 64 << 20;
/// Read buffer per connection.
pub(crate) const READ_BUFFER: usize = 64 << 10;

/// Serve the echo on `listener`: a task per connection.
pub(crate) async fn serve(listener: tokio::net::TcpListener) -> anyhow::Result<()> {
    loop {
        let (stream, _) = listener.accept().await.context("accept")?;
        tokio::spawn(async move {
            // A connection ends with an error when the caller hangs up.
            let _ = echo_connection(stream).await;
        });
    }
}

async fn echo_connection(stream: TcpStream) -> anyhow::Result<()> {
    stream.set_nodelay(true)?;
    let mut stream = BufReader::with_capacity(READ_BUFFER, stream);
    let mut frame = Vec::new();
    loop {
        read_frame(&mut stream, &mut frame).await?;
        stream.get_mut().write_all(&frame).await?;
    }
}

/// Read one frame (length prefix included) into `frame`.
async fn read_frame(stream: &mut BufReader<TcpStream>, frame: &mut Vec<u8>) -> anyhow::Result<()> {
    let mut prefix = [0; 4];
    stream.read_exact(&mut prefix).await?;
    let len = u32::from_be_bytes(prefix) as usize;
    if len > MAX_FRAME {
        bail!("frame of {len} bytes is over the {MAX_FRAME}-byte limit");
    }
    frame.clear();
    frame.extend_from_slice(&prefix);
    frame.resize(4 + len, 0);
    stream.read_exact(&mut frame[4..]).await?;
    Ok(())
}

/// One caller: its own connection, its frame to send, and a buffer for the
/// answer.
pub(crate) struct Caller {
    stream: BufReader<TcpStream>,
    request: Vec<u8>,
    reply: Vec<u8>,
    id: u64,
}

/// Open one connection per caller.
pub(crate) async fn callers(addr: SocketAddr, cell: Cell) -> anyhow::Result<Vec<Caller>> {
    let body = cell.payload + workload::RAW_EXTRA;
    let mut request = Vec::with_capacity(4 + body);
    request.extend_from_slice(&u32::try_from(body).context("payload too large")?.to_be_bytes());
    request.extend_from_slice(&[0; 8]); // the id
    request.extend_from_slice(&workload::payload(body - 8));
    let mut callers = Vec::with_capacity(cell.callers);
    for i in 0..cell.callers {
        let stream = TcpStream::connect(addr).await.with_context(|| format!("cannot connect to {addr}"))?;
        stream.set_nodelay(true)?;
        callers.push(Caller {
            stream: BufReader::with_capacity(READ_BUFFER, stream),
            request: request.clone(),
            reply: Vec::with_capacity(request.len()),
            id: workload::first_id(i),
        });
    }
    Ok(callers)
}

impl AsyncCaller for Caller {
    async fn call(&mut self) -> anyhow::Result<()> {
        self.id += 1;
        self.request[4..12].copy_from_slice(&self.id.to_le_bytes());
        self.stream.get_mut().write_all(&self.request).await.context("send")?;
        read_frame(&mut self.stream, &mut self.reply).await.context("receive")?;
        check_reply(self.id, &self.request, &self.reply)
    }
}

/// The answer must be the frame we sent: its length and its id.
pub(crate) fn check_reply(id: u64, request: &[u8], reply: &[u8]) -> anyhow::Result<()> {
    let got_id = reply.get(4..12).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes);
    if got_id != Some(id) || reply.len() != request.len() {
        bail!(
            "bad echo: got a {}-byte frame with id {got_id:?}, sent {} bytes with id {id}",
            reply.len(),
            request.len()
        );
    }
    Ok(())
}
