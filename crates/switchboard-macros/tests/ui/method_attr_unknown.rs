// A method option the macro does not know.
#[switchboard::service]
pub trait Arith {
    #[switchboard(retries = 3)]
    async fn add(&self, pair: (i64, i64)) -> Result<i64, switchboard::Status>;
}

fn main() {}
