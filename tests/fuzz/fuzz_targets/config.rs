//! Config parsing (TOML plus IMGNODE_* overrides): any text gives a config or a list of
//! problems; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // A line `ENV KEY=VALUE` at the start becomes an environment override.
    let (env, toml) = match text.strip_prefix("ENV ") {
        Some(rest) => {
            let (line, toml) = rest.split_once('\n').unwrap_or((rest, ""));
            let env = line
                .split_once('=')
                .map(|(k, v)| vec![(k.to_string(), v.to_string())])
                .unwrap_or_default();
            (env, toml)
        }
        None => (Vec::new(), text),
    };
    let _ = imgnode::config::parse(toml, env);
});
