// Handlers are shared between concurrent calls: no `&mut self`.
#[switchboard::service]
pub trait Counter {
    async fn bump(&mut self) -> Result<u64, switchboard::Status>;
}

fn main() {}
