//! A real Azurite (blob, queue, table) on loopback ports for one test,
//! started from the npm install that `scripts/lib.sh install_azurite` makes.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use meetbot::azure::sas::{account_sas, AZURITE_ACCOUNT, AZURITE_KEY};

pub struct Azurite {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub blob_port: u16,
    pub queue_port: u16,
    pub table_port: u16,
}

fn azurite_js() -> PathBuf {
    if let Ok(p) = std::env::var("MEETBOT_AZURITE") {
        return PathBuf::from(p);
    }
    let cache = std::env::var("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache"));
    cache.join("meetbot/azurite-3.37.0/node_modules/azurite/dist/src/azurite.js")
}

impl Azurite {
    pub fn start() -> Azurite {
        let mut a = Azurite {
            child: None,
            dir: tempfile::tempdir().unwrap(),
            blob_port: super::free_port(),
            queue_port: super::free_port(),
            table_port: super::free_port(),
        };
        a.spawn();
        a
    }

    fn spawn(&mut self) {
        let js = azurite_js();
        assert!(
            js.exists(),
            "Azurite is not installed at {} (run scripts/test, or `. scripts/lib.sh; install_azurite`)",
            js.display()
        );
        let child = Command::new("node")
            .arg(&js)
            .args([
                "--silent",
                "--disableTelemetry",
                "--skipApiVersionCheck",
                "--location",
            ])
            .arg(self.dir.path())
            .args([
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                &self.blob_port.to_string(),
            ])
            .args([
                "--queueHost",
                "127.0.0.1",
                "--queuePort",
                &self.queue_port.to_string(),
            ])
            .args([
                "--tableHost",
                "127.0.0.1",
                "--tablePort",
                &self.table_port.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start node (Azurite)");
        self.child = Some(child);
        for p in [self.blob_port, self.queue_port, self.table_port] {
            super::wait_port(p, Duration::from_secs(60));
        }
    }

    /// Stops Azurite (its data stays in `dir`).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same ports with the same data.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    pub fn sas() -> String {
        let expiry = time::OffsetDateTime::now_utc() + time::Duration::hours(6);
        account_sas(AZURITE_ACCOUNT, AZURITE_KEY, "bqt", expiry).unwrap()
    }

    pub fn blob_url(&self) -> String {
        format!("http://127.0.0.1:{}/{AZURITE_ACCOUNT}", self.blob_port)
    }
    pub fn queue_url(&self) -> String {
        format!("http://127.0.0.1:{}/{AZURITE_ACCOUNT}", self.queue_port)
    }
    pub fn table_url(&self) -> String {
        format!("http://127.0.0.1:{}/{AZURITE_ACCOUNT}", self.table_port)
    }

    /// Configuration (TOML) pointing meetbot at this Azurite.
    pub fn config_toml(&self) -> String {
        format!(
            "[azure]\nauth = \"sas\"\nblob_url = {:?}\nqueue_url = {:?}\ntable_url = {:?}\nstorage_sas = {:?}\n[store]\nkind = \"azure_blob\"\n",
            self.blob_url(),
            self.queue_url(),
            self.table_url(),
            Self::sas()
        )
    }

    /// A loaded config with this Azurite, for in-process clients.
    pub fn config(&self) -> meetbot::config::Config {
        let f = self.dir.path().join("client.toml");
        std::fs::write(&f, self.config_toml()).unwrap();
        meetbot::config::Config::load(Some(&f), Vec::<(String, String)>::new()).unwrap()
    }

    pub fn env(&self) -> meetbot::fleet::AzureEnv {
        meetbot::fleet::AzureEnv::from_config(&self.config()).unwrap()
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        self.stop();
    }
}
