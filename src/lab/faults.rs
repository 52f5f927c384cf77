//! Faults to inject into the lab, for tests and demonstrations: cut or slow down the WAN link
//! (inside the router container, the only path between the two sites) and stop or start a
//! whole host. The kernel here has no `netem`, so latency cannot be injected; bandwidth can.

use super::topology::{self, ROUTER_CONTAINER, SITES};
use super::{Lab, LabError};

impl Lab {
    /// Cuts the link between the sites: both router interfaces go down. Each site still reaches
    /// the workstation; nothing crosses from one site to the other.
    pub fn wan_cut(&self) -> Result<(), LabError> {
        for dev in self.router_interfaces()? {
            self.router_exec("cutting the WAN link", &["ip", "link", "set", &dev, "down"])?;
        }
        Ok(())
    }

    /// Restores the WAN link: interfaces up, bandwidth limits removed.
    pub fn wan_restore(&self) -> Result<(), LabError> {
        for dev in self.router_interfaces()? {
            self.router_exec("restoring the WAN link", &["ip", "link", "set", &dev, "up"])?;
            // No limit in place is fine: `tc` then says there is nothing to delete.
            let _ = self.router_exec(
                "removing a bandwidth limit",
                &["tc", "qdisc", "del", "dev", &dev, "root"],
            );
        }
        Ok(())
    }

    /// Limits the WAN bandwidth in both directions to `rate` (`tc` syntax: `512kbit`, `10mbit`).
    pub fn wan_limit(&self, rate: &str) -> Result<(), LabError> {
        let bits = parse_rate(rate).ok_or_else(|| {
            LabError::Usage(format!(
                "`{rate}` is not a rate picaops understands. Write a number and a unit: \
             `512kbit`, `10mbit`, `1gbit`."
            ))
        })?;
        let burst = burst_bytes(bits).to_string();
        for dev in self.router_interfaces()? {
            self.router_exec(
                "limiting the WAN bandwidth",
                &[
                    "tc", "qdisc", "replace", "dev", &dev, "root", "tbf", "rate", rate, "burst",
                    &burst, "latency", "100ms",
                ],
            )?;
        }
        Ok(())
    }

    /// Stops a lab host (like pulling its power cord, but clean: systemd shuts down).
    pub fn stop_host(&self, name: &str) -> Result<(), LabError> {
        let h = self.known_host(name)?;
        self.docker.run(
            &format!("stopping lab host {}", h.name),
            ["stop", "--time", "10", &topology::container_name(h.name)],
        )?;
        Ok(())
    }

    /// Starts a stopped lab host and waits until it answers SSH.
    pub fn start_host(&self, name: &str) -> Result<(), LabError> {
        let h = self.known_host(name)?;
        self.docker.run(
            &format!("starting lab host {}", h.name),
            ["start", &topology::container_name(h.name)],
        )?;
        self.wait_for_ssh(&[h], super::SSH_READY_TIMEOUT)
    }

    /// The router's interface on each site network, found by the router's address there.
    fn router_interfaces(&self) -> Result<Vec<String>, LabError> {
        let out = self.router_exec(
            "reading the router's interfaces",
            &["ip", "-o", "-4", "addr", "show"],
        )?;
        let devs = router_devices(&out);
        if devs.len() != SITES.len() {
            return Err(LabError::NotUp(format!(
                "the WAN router has {} of its {} site interfaces; `picaops lab down && picaops lab up` recreates it",
                devs.len(),
                SITES.len()
            )));
        }
        Ok(devs)
    }

    fn router_exec(&self, what: &str, cmd: &[&str]) -> Result<String, LabError> {
        if self
            .docker
            .container(ROUTER_CONTAINER)
            .is_none_or(|(state, _)| state != "running")
        {
            return Err(LabError::NotUp("the WAN router is not running".into()));
        }
        let mut args = vec!["exec", ROUTER_CONTAINER];
        args.extend_from_slice(cmd);
        self.docker.run(what, args)
    }
}

/// From `ip -o -4 addr show` output, the interfaces holding a site router address.
fn router_devices(ip_output: &str) -> Vec<String> {
    SITES
        .iter()
        .filter_map(|s| {
            ip_output.lines().find_map(|line| {
                let mut words = line.split_whitespace();
                let dev = words.nth(1)?;
                let addr = words.skip_while(|w| *w != "inet").nth(1)?;
                (addr.split('/').next() == Some(s.router)).then(|| {
                    dev.trim_end_matches(':')
                        .split('@')
                        .next()
                        .unwrap_or(dev)
                        .to_string()
                })
            })
        })
        .collect()
}

/// `512kbit` → 512 000 bits per second; only bit units (tc's `kbps` means bytes: refused).
pub fn parse_rate(rate: &str) -> Option<u64> {
    let rate = rate.trim().to_ascii_lowercase();
    let digits_end = rate.find(|c: char| !c.is_ascii_digit())?;
    let n: u64 = rate[..digits_end].parse().ok()?;
    let mult = match &rate[digits_end..] {
        "bit" => 1,
        "kbit" => 1_000,
        "mbit" => 1_000_000,
        "gbit" => 1_000_000_000,
        _ => return None,
    };
    (n > 0).then_some(n * mult)
}

/// tbf's bucket: at least what flows in 20 ms (the kernel needs rate/HZ), never under 4 KiB.
fn burst_bytes(bits_per_second: u64) -> u64 {
    (bits_per_second / 8 / 50).max(4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_in_bits() {
        assert_eq!(parse_rate("512kbit"), Some(512_000));
        assert_eq!(parse_rate("10Mbit"), Some(10_000_000));
        assert_eq!(parse_rate("1gbit"), Some(1_000_000_000));
        assert_eq!(parse_rate("10mbps"), None);
        assert_eq!(parse_rate("fast"), None);
        assert_eq!(parse_rate("0kbit"), None);
    }

    #[test]
    fn burst_is_never_tiny() {
        assert_eq!(burst_bytes(64_000), 4096);
        assert_eq!(burst_bytes(100_000_000), 250_000);
    }

    #[test]
    fn router_devices_found_by_address() {
        let out = "1: lo    inet 127.0.0.1/8 scope host lo\n\
                   45: eth0    inet 172.30.1.254/24 brd 172.30.1.255 scope global eth0\n\
                   47: eth1    inet 172.30.2.254/24 brd 172.30.2.255 scope global eth1\n";
        assert_eq!(router_devices(out), vec!["eth0", "eth1"]);
    }
}
