//! Profiling aid (`valgrind --tool=callgrind`, `perf`): runs the CPU path
//! of one event N times, as the relay does (`text`: read, fingerprint,
//! scrub over the text) or through a tree (`tree`: parse, fingerprint,
//! scrub, serialize).
//!
//! `cargo run --release --example prof_scrub -- EVENT.json [N] [text|tree] [CONFIG.toml]`
//!
//! With CONFIG.toml, its `[scrub]` (the default config's otherwise), or
//! with `PROF_SCRUB_PROJECT=ID` that project's.
// The relay's allocator, so that allocation costs count as they do there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .expect("usage: prof_scrub EVENT.json [N] [text|tree] [CONFIG.toml]");
    let n: usize = args
        .next()
        .map_or(2000, |s| s.parse().expect("N is a number"));
    let mode = args.next().unwrap_or_else(|| "text".into());
    let event = std::fs::read(path).expect("the event file is readable");
    let toml = args.next().map_or(String::new(), |path| {
        std::fs::read_to_string(path).expect("the config file is readable")
    });
    let config = edge_relay::Config::from_toml(&toml).expect("the config is valid");
    let scrubber = match std::env::var("PROF_SCRUB_PROJECT") {
        Ok(id) => {
            let id = id.parse().expect("PROF_SCRUB_PROJECT is a project id");
            let project = config.projects.get(id).expect("the project is configured");
            project.scrubber.clone()
        }
        Err(_) => config.scrubber.clone(),
    };
    let mut total = 0;
    for _ in 0..n {
        if mode == "tree" {
            let (mut tree, _) = edge_relay::envelope::parse_event(&event, 128).expect("valid");
            total += edge_relay::fingerprint::fingerprint(&tree).map_or(0, |f| f.len());
            total += scrubber.scrub_event(&mut tree).len();
            total += serde_json::to_vec(&tree).expect("serializes").len();
        } else {
            let (read, _) = edge_relay::envelope::read_event(&event, 128).expect("valid");
            total += read.fingerprint().map_or(0, |f| f.len());
            let text = std::str::from_utf8(&event).expect("UTF-8");
            match scrubber
                .scrub_event_text(text)
                .expect("the text pass takes it")
            {
                Some((out, redactions)) => total += out.len() + redactions.len(),
                None => total += 1,
            }
        }
    }
    println!("{total}");
}
