//! The SMTP sink over a raw SMTP conversation: it requires the login it was
//! given, saves what it accepts, and flaps as told.

use callguard_mocks::{SmtpFlap, SmtpSink};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const USER: &str = "sink-user";
const PASSWORD: &str = "sink-password";

/// One SMTP session: sends each command and returns the reply code of each
/// (the greeting's first); multi-line replies are read to their last line.
async fn session(port: u16, commands: &[String]) -> Vec<u16> {
    let stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let mut reply = async || loop {
        let line = lines.next_line().await.unwrap().expect("a reply");
        if line.as_bytes().get(3) != Some(&b'-') {
            return line[..3].parse::<u16>().unwrap();
        }
    };
    let mut codes = vec![reply().await];
    for command in commands {
        write.write_all(command.as_bytes()).await.unwrap();
        codes.push(reply().await);
    }
    codes
}

/// Sends one message as `user`; the reply code to its end of data.
async fn send(port: u16, user: &str, subject: &str) -> u16 {
    let plain = format!("\0{user}\0{PASSWORD}");
    let commands = [
        "EHLO test\r\n".to_owned(),
        format!("AUTH PLAIN {}\r\n", base64(plain.as_bytes())),
        "MAIL FROM:<a@example.com>\r\n".to_owned(),
        "RCPT TO:<b@example.com>\r\n".to_owned(),
        "DATA\r\n".to_owned(),
        format!("Subject: {subject}\r\n\r\nbody\r\n.\r\n"),
        "QUIT\r\n".to_owned(),
    ];
    let codes = session(port, &commands).await;
    if codes[2] != 235 {
        return codes[2];
    }
    codes[6]
}

/// Standard base64 with padding (RFC 4648).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[tokio::test]
async fn accepts_a_logged_in_message_and_refuses_a_wrong_login() {
    let sink = SmtpSink::start(USER, PASSWORD).await.unwrap();
    assert_eq!(send(sink.port(), USER, "one").await, 250);
    assert_eq!(send(sink.port(), "someone-else", "two").await, 535);
    let messages = sink.messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0]["login"], USER);
    assert!(
        messages[0]["data"]
            .as_str()
            .unwrap()
            .contains("Subject: one")
    );
    sink.stop().await;
}

#[tokio::test]
async fn a_flapping_sink_accepts_and_refuses_in_turn() {
    let flap = SmtpFlap {
        accepted: 2,
        refused: 1,
    };
    let sink = SmtpSink::start_flapping(USER, PASSWORD, flap)
        .await
        .unwrap();
    let mut codes = Vec::new();
    for i in 0..6 {
        codes.push(send(sink.port(), USER, &format!("m{i}")).await);
    }
    assert_eq!(codes, [250, 250, 451, 250, 250, 451]);
    let subjects: Vec<String> = sink
        .messages()
        .iter()
        .map(|m| {
            let data = m["data"].as_str().unwrap();
            data.lines()
                .find_map(|l| l.strip_prefix("Subject: "))
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(
        subjects,
        ["m0", "m1", "m3", "m4"],
        "refused messages are not saved"
    );
    sink.stop().await;
}
