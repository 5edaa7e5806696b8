//! The service name of a process started through an interpreter: the
//! program it runs (script, module, jar or main class), read from its
//! command line the way each interpreter parses its own options.

/// Interpreters are named by their language id, which doubles as the
/// `telemetry.sdk.language` value. Versioned names (`python3.11`) are common.
fn interpreter(exe_name: &str) -> Option<&'static str> {
    match exe_name.trim_end_matches(|c: char| c.is_ascii_digit() || c == '.') {
        "python" | "pypy" => Some("python"),
        "node" | "nodejs" => Some("nodejs"),
        "java" => Some("java"),
        "ruby" => Some("ruby"),
        "php" => Some("php"),
        "perl" => Some("perl"),
        _ => None,
    }
}

/// Semconv has no `perl` value; Go and other compiled languages can't be
/// told from the executable name, so they are left out.
pub(super) fn sdk_language(exe_name: &str) -> Option<&'static str> {
    match interpreter(exe_name) {
        Some("perl") => None,
        None if exe_name.starts_with("php-fpm") => Some("php"),
        lang => lang,
    }
}

/// How an interpreter's command line names the program it runs.
struct Grammar {
    /// Short options taking a value, attached or as the next argument.
    with_value: &'static str,
    /// Short options whose value can only be attached (`-Mstrict`).
    attached: &'static str,
    /// Options giving inline code (`-c`, `-e`): there is no script.
    inline_code: &'static str,
    /// Option whose value is a module to run (`python -m`).
    module: Option<char>,
    /// Option whose value is the script (`php -f`).
    script: Option<char>,
    long_with_value: &'static [&'static str],
    /// Dropped from the script's name.
    exts: &'static [&'static str],
}

const BASE: Grammar = Grammar {
    with_value: "",
    attached: "",
    inline_code: "",
    module: None,
    script: None,
    long_with_value: &[],
    exts: &[],
};
const PYTHON: Grammar = Grammar {
    with_value: "WX",
    inline_code: "c",
    module: Some('m'),
    long_with_value: &["--check-hash-based-pycs"],
    exts: &[".py", ".pyc", ".pyz", ".pyw"],
    ..BASE
};
const NODE: Grammar = Grammar {
    with_value: "rC",
    inline_code: "ep",
    long_with_value: &["--require", "--import", "--loader", "--experimental-loader", "--conditions", "--title"],
    exts: &[".js", ".mjs", ".cjs", ".ts"],
    ..BASE
};
const RUBY: Grammar = Grammar { with_value: "ICEr", attached: "xF0W", inline_code: "e", exts: &[".rb"], ..BASE };
const PHP: Grammar = Grammar { with_value: "cdzRBEFtS", inline_code: "r", script: Some('f'), exts: &[".php"], ..BASE };
const PERL: Grammar = Grammar { with_value: "I", attached: "MmxdDCl0iF", inline_code: "eE", exts: &[".pl"], ..BASE };

/// For an interpreter, the program it runs: a script's stem, a python
/// module, a jar or a java main class. If none is on the command line but
/// argv[0] is not the interpreter, the program renamed itself
/// (setproctitle: `gunicorn: worker [app]`, `puma 6.4 (tcp://…)`) and its
/// first word names it.
pub(super) fn interpreted_service_name(exe_name: &str, cmdline: &[String]) -> Option<String> {
    let args = cmdline.get(1..).unwrap_or_default();
    let found = match interpreter(exe_name)? {
        "java" => java_program(args),
        "python" => script_arg(args, &PYTHON),
        "nodejs" => script_arg(args, &NODE),
        "ruby" => script_arg(args, &RUBY),
        "php" => script_arg(args, &PHP),
        _ => script_arg(args, &PERL),
    };
    found.filter(|n| !n.is_empty()).or_else(|| {
        let word = cmdline.first()?.split_whitespace().next()?.trim_end_matches(':');
        let word = word.rsplit('/').next()?;
        (!word.is_empty() && word != exe_name && interpreter(word).is_none()).then(|| word.to_owned())
    })
}

/// First operand after the interpreter's options, for getopt-style short
/// options that may be grouped (`-uBm mod`).
fn script_arg(args: &[String], g: &Grammar) -> Option<String> {
    let mut it = args.iter().map(String::as_str);
    while let Some(arg) = it.next() {
        if arg == "--" {
            return it.next().map(|p| script_name(p, g.exts));
        }
        if let Some(long) = arg.strip_prefix("--") {
            if matches!(long, "eval" | "print") || long.starts_with("eval=") {
                return None;
            }
            if !long.contains('=') && g.long_with_value.contains(&arg) {
                it.next();
            }
            continue;
        }
        let Some(group) = arg.strip_prefix('-').filter(|g| !g.is_empty()) else {
            return (arg != "-").then(|| script_name(arg, g.exts));
        };
        for (i, c) in group.char_indices() {
            if g.attached.contains(c) {
                break;
            }
            let is = |o: Option<char>| o == Some(c);
            if g.with_value.contains(c) || g.inline_code.contains(c) || is(g.module) || is(g.script) {
                let rest = &group[i + c.len_utf8()..];
                let value = if rest.is_empty() { it.next() } else { Some(rest) };
                if g.inline_code.contains(c) {
                    return None;
                } else if is(g.module) {
                    return value.map(str::to_owned);
                } else if is(g.script) {
                    return value.map(|p| script_name(p, g.exts));
                }
                break;
            }
        }
    }
    None
}

fn script_name(path: &str, exts: &[&str]) -> String {
    let mut parts = path.trim_end_matches('/').rsplit('/');
    let base = parts.next().unwrap_or_default();
    let stem = exts.iter().find_map(|e| base.strip_suffix(e)).unwrap_or(base);
    // `python pkg/__main__.py` runs package `pkg`.
    if stem == "__main__" { parts.next().unwrap_or_default().to_owned() } else { stem.to_owned() }
}

/// `-jar foo-1.2.jar` → `foo`, `-m mod/com.x.Main` and `com.x.Main` → `Main`,
/// `Foo.java` (source launcher) → `Foo`.
fn java_program(args: &[String]) -> Option<String> {
    let mut it = args.iter().map(String::as_str);
    while let Some(arg) = it.next() {
        match arg {
            "-jar" => return it.next().map(jar_name),
            "-m" | "--module" => return it.next().map(module_main),
            "-cp"
            | "-classpath"
            | "--class-path"
            | "-p"
            | "--module-path"
            | "--add-modules"
            | "--add-opens"
            | "--add-exports"
            | "--add-reads"
            | "--patch-module"
            | "--limit-modules"
            | "--upgrade-module-path"
            | "--enable-native-access"
            | "--source" => {
                it.next();
            }
            a if a.starts_with("--module=") => return a.get(9..).map(module_main),
            a if a.starts_with('-') || a.starts_with('@') => {}
            a => {
                return Some(match a.strip_suffix(".java") {
                    Some(src) => src.rsplit('/').next().unwrap_or(src).to_owned(),
                    None => a.rsplit('.').next().unwrap_or(a).to_owned(),
                });
            }
        }
    }
    None
}

/// Drops the directory, `.jar` and a version suffix (`svc-0.0.1-SNAPSHOT`).
fn jar_name(path: &str) -> String {
    let base = path.rsplit('/').next().unwrap_or(path);
    let stem = base.strip_suffix(".jar").unwrap_or(base);
    let version = stem.as_bytes().windows(2).position(|w| w[0] == b'-' && w[1].is_ascii_digit());
    match version {
        Some(i) if i > 0 => stem[..i].to_owned(),
        _ => stem.to_owned(),
    }
}

fn module_main(spec: &str) -> String {
    match spec.split_once('/') {
        Some((_, class)) => class.rsplit('.').next().unwrap_or(class).to_owned(),
        None => spec.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::identity::split_nul;

    fn argv(s: &str) -> Vec<String> {
        s.split(' ').map(str::to_owned).collect()
    }

    #[test]
    fn interpreter_service_names() {
        let cases = [
            ("python3.11", "python3 app.py", "app"),
            ("python3.11", "/usr/bin/python3.11 -u -W ignore /srv/app/main.py --port 80", "main"),
            ("python3", "python -m flask run", "flask"),
            ("python3", "python -Bm http.server 8000", "http.server"),
            ("python3", "/usr/bin/python3 /usr/local/bin/gunicorn -w 4 app:app", "gunicorn"),
            ("python3", "python /opt/tool/__main__.py", "tool"),
            ("python3", "python3 -c print(1)", "python3"),
            ("python", "python", "python"),
            ("node", "node server.js", "server"),
            ("node", "node --require ./otel.js -r dotenv/config /app/dist/api.mjs", "api"),
            ("node", "node -e 1", "node"),
            ("java", "java -jar foo.jar", "foo"),
            ("java", "java -Xmx1g -Dx=y -jar /app/orders-0.0.1-SNAPSHOT.jar", "orders"),
            ("java", "java -cp lib/a.jar:lib/b.jar com.x.Main arg", "Main"),
            ("java", "java --module-path mods -m com.x/com.x.app.Server", "Server"),
            ("java", "java Hello.java", "Hello"),
            ("ruby3.1", "ruby -Ilib /usr/local/bundle/bin/puma -C config/puma.rb", "puma"),
            ("php8.2", "php -d memory_limit=1G artisan serve", "artisan"),
            ("php", "php -f /var/www/worker.php", "worker"),
            ("perl", "perl -Mstrict -I lib /usr/bin/starman app.psgi", "starman"),
            ("perl", "perl -e 1", "perl"),
        ];
        for (exe, cmd, want) in cases {
            let got = interpreted_service_name(exe, &argv(cmd)).unwrap_or_else(|| exe.to_owned());
            assert_eq!(got, want, "{exe} / {cmd}");
        }
        assert_eq!(interpreted_service_name("python3", &[]), None);
        // Renamed by setproctitle: one argument, padded with NULs.
        let renamed = [
            ("python3", &b"gunicorn: worker [app:app]\0\0\0\0"[..], Some("gunicorn")),
            ("ruby", b"puma 6.4.0 (tcp://0.0.0.0:3000) [app]\0", Some("puma")),
            ("node", b"my-api\0\0", Some("my-api")),
            ("nginx", b"nginx: worker process\0", None),
        ];
        for (exe, raw, want) in renamed {
            assert_eq!(interpreted_service_name(exe, &split_nul(raw)).as_deref(), want, "{exe}");
        }
    }
}
