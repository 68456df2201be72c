// A service trait cannot have type parameters: the generated server and
// client would have nothing to fix them with.
#[switchboard::service]
pub trait Store<K> {
    async fn get(&self, key: K) -> Result<String, switchboard::Status>;
}

fn main() {}
