//! The two services of the `inventory` / `orders` example pair: their
//! traits (and so their typed clients), shared by both programs. Each
//! program uses only part of it (inventory serves one trait, orders serves
//! the other and calls the first), hence the `allow`.
#![allow(dead_code)]

use switchboard::Status;

/// Stock levels by item.
#[switchboard::service]
pub(crate) trait Inventory {
    /// How many of `item` are left.
    #[switchboard(idempotent)]
    async fn stock(&self, item: String) -> Result<u32, Status>;
    /// Take one `item` off the shelf; how many are left. Not idempotent:
    /// a retry after a lost answer could take two.
    async fn reserve(&self, item: String) -> Result<u32, Status>;
}

/// Orders, placed against the inventory.
#[switchboard::service]
pub(crate) trait Orders {
    /// Order one `item`; how many are left after it.
    async fn place(&self, item: String) -> Result<u32, Status>;
}
