// What the other tests in the workspace do not use: a renamed service and
// method, both method options in one attribute and in two, an error type
// that converts into `Status`, a fully qualified `Result`, doc comments. It
// must compile, and the names must reach the server and the client.
use switchboard::{Client, Service, Status};

pub struct Overflow;

impl From<Overflow> for Status {
    fn from(_: Overflow) -> Status {
        Status::out_of_range("overflow")
    }
}

/// Arithmetic.
#[switchboard::service(name = "Calculator")]
pub trait Arith {
    /// `a + b`.
    #[switchboard(name = "Plus", idempotent)]
    async fn add(&self, pair: (i64, i64)) -> Result<i64, Overflow>;

    #[switchboard(idempotent)]
    #[switchboard(name = "Square")]
    async fn square_of(&self, x: i64) -> std::result::Result<i64, Status>;

    async fn get_last_result(&self) -> Result<i64, Status>;
}

struct Calc;

impl Arith for Calc {
    async fn add(&self, (a, b): (i64, i64)) -> Result<i64, Overflow> {
        a.checked_add(b).ok_or(Overflow)
    }

    async fn square_of(&self, mut x: i64) -> Result<i64, Status> {
        x = x.checked_mul(x).ok_or_else(|| Status::out_of_range("overflow"))?;
        Ok(x)
    }

    async fn get_last_result(&self) -> Result<i64, Status> {
        Ok(0)
    }
}

fn main() {
    let server = ArithServer::new(Calc);
    assert_eq!(server.name(), "Calculator");
    assert_eq!(server.methods(), ["Plus", "Square", "GetLastResult"]);
    assert_eq!(ArithClient::<Client>::SERVICE, "Calculator");
}
