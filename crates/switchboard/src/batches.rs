//! A stream of batches from a watching source to its consumer: what
//! [`discovery`](crate::discovery) sends a service's instance changes on
//! ([`Changes`](crate::discovery::Changes)) and
//! [`config`](crate::config) a prefix's key events on
//! ([`ConfigWatch`](crate::config::ConfigWatch)). One type for both, so a
//! fix to one is a fix to the other.
//!
//! The source holds the [`BatchSender`] and stops when [`send`](BatchSender::send)
//! reports the consumer gone; the consumer reads [`Batches::next`] and
//! stops the source by dropping it. The channel is bounded: a consumer that
//! does not read makes the source wait, it never grows a queue.

use tokio::sync::mpsc;

/// The receiving half: the batches a source reports, in order. Each batch
/// is applied as a whole. Dropping it stops the source.
#[derive(Debug)]
pub struct Batches<T> {
    rx: mpsc::Receiver<Vec<T>>,
}

impl<T> Batches<T> {
    /// A channel pair: the source sends batches on the [`BatchSender`], the
    /// consumer reads them here. `capacity` batches (at least one) may wait
    /// unread before the source waits in turn.
    pub fn channel(capacity: usize) -> (BatchSender<T>, Batches<T>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (BatchSender { tx }, Batches { rx })
    }

    /// The next batch; `None` once the source has stopped for good.
    pub async fn next(&mut self) -> Option<Vec<T>> {
        self.rx.recv().await
    }
}

/// The sending half of [`Batches`], held by the source.
#[derive(Debug)]
pub struct BatchSender<T> {
    tx: mpsc::Sender<Vec<T>>,
}

// Not derived: a derive would ask `T: Clone`, which a sender never needs.
impl<T> Clone for BatchSender<T> {
    fn clone(&self) -> Self {
        BatchSender { tx: self.tx.clone() }
    }
}

impl<T> BatchSender<T> {
    /// Send a batch, waiting while the channel is full. `Err` means the
    /// consumer is gone: stop watching.
    pub async fn send(&self, batch: Vec<T>) -> Result<(), ConsumerGone> {
        self.tx.send(batch).await.map_err(|_| ConsumerGone)
    }

    /// Send a batch if there is room now; otherwise (channel full, or the
    /// consumer gone) hand it back. For a source whose first batch goes
    /// into a fresh channel, which always has room.
    pub fn try_send(&self, batch: Vec<T>) -> Result<(), Vec<T>> {
        self.tx.try_send(batch).map_err(|e| e.into_inner())
    }

    /// Resolves when the consumer is gone.
    pub async fn closed(&self) {
        self.tx.closed().await
    }

    /// Whether the consumer is gone.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// The [`Batches`] receiver was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsumerGone;

impl std::fmt::Display for ConsumerGone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the consumer of the batches is gone")
    }
}

impl std::error::Error for ConsumerGone {}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn batches_arrive_in_order_and_a_dropped_consumer_stops_the_source() {
        let (tx, mut rx) = Batches::channel(1);
        tx.send(vec![1, 2]).await.expect("consumer alive");
        let second = tx.clone();
        let sent = tokio::spawn(async move { second.send(vec![3]).await });
        assert_eq!(rx.next().await, Some(vec![1, 2]));
        assert_eq!(rx.next().await, Some(vec![3]));
        assert_eq!(sent.await.expect("task"), Ok(()));
        drop(rx);
        assert!(tx.is_closed());
        tx.closed().await;
        assert_eq!(tx.send(vec![4]).await, Err(ConsumerGone));
    }
}
