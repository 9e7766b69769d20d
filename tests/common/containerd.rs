//! containerd as a node runs it, for the tests that pull through `detour
//! proxy`: Debian's `containerd` with its own root, state and socket (so
//! it touches nothing of the machine's), the CRI plugin off, driven by
//! `ctr`. Needs root, as containerd does; tests/run.sh installs it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub struct Containerd {
    child: Child,
    dir: tempfile::TempDir,
}

impl Containerd {
    pub fn start() -> Containerd {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let config = root.join("config.toml");
        std::fs::write(
            &config,
            format!(
                "version = 2\nroot = \"{0}/root\"\nstate = \"{0}/state\"\n\
                 disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
                 [grpc]\n  address = \"{0}/containerd.sock\"\n\
                 [ttrpc]\n  address = \"{0}/containerd-ttrpc.sock\"\n",
                root.display()
            ),
        )
        .unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(root.join("containerd.log")).unwrap())
            .spawn()
            .expect("containerd is installed (tests/run.sh installs it) and this runs as root");
        let containerd = Containerd { child, dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !containerd.ctr(&["version"]).status.success() {
            assert!(
                Instant::now() < deadline,
                "containerd did not start: {}",
                containerd.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        containerd
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("containerd.sock")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    /// `ctr` against this containerd, in the namespace `detour-tests`.
    pub fn ctr(&self, args: &[&str]) -> Output {
        Command::new("ctr")
            .arg("--address")
            .arg(self.socket())
            .args(["--namespace", "detour-tests"])
            .args(args)
            .output()
            .expect("ctr is installed with containerd")
    }

    /// `ctr images pull` as a node pulls: the registry configuration from
    /// `hosts_dir` (what `detour containerd-config` writes), the layers
    /// unpacked (with the native snapshotter, which needs no kernel support).
    pub fn pull(&self, hosts_dir: &Path, image: &str) -> Output {
        self.ctr(&[
            "images",
            "pull",
            "--hosts-dir",
            hosts_dir.to_str().unwrap(),
            "--snapshotter",
            "native",
            image,
        ])
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
