// A method cannot be generic: the server must know what to decode.
#[switchboard::service]
pub trait Store {
    async fn put<V: Clone>(&self, value: V) -> Result<(), switchboard::Status>;
}

fn main() {}
