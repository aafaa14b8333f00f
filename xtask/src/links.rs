//! `cargo xtask links`: the README and the guide hold together.
//!
//! - Every relative link of `README.md` and of the pages of `docs/` names a
//!   file or directory of the repository, and, with `#anchor`, a heading of
//!   that page, by GitHub's rule for heading ids: the heading's text,
//!   lowercased, with spaces turned into `-` and punctuation other than `-`
//!   and `_` dropped; a repeated heading gets `-1`, `-2`, ... Links to other
//!   sites are not fetched.
//! - Every page of `docs/` can be reached from the README by following links.
//! - Every page with Rust code blocks (as rustdoc reads them: a fence with no
//!   language, or `rust` and rustdoc's attributes) is included as doctests by
//!   the `src/lib.rs` of a crate of the workspace
//!   (`#[doc = include_str!("../../docs/core.md")]`), so that its code is
//!   compiled.
//!
//! Code blocks and code spans are skipped: a link shown as code is not a link.

use crate::cmd::{self, Result};
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::fs;
use std::path::{Component, Path, PathBuf};

pub const USAGE: &str =
    "  links                        check that every relative link of README.md and docs/
                               resolves (files, and #anchors by GitHub's heading ids),
                               that every page of docs/ is reachable from the README,
                               and that every page with Rust code blocks is a doctest
";

/// The page every other must be reachable from.
const FRONT: &str = "README.md";
/// The directory of the guide.
const GUIDE: &str = "docs";

pub fn run(args: &[String]) -> Result<u8> {
    if !args.is_empty() {
        return Err(format!("links takes no arguments (got `{}`)", args.join(" ")).into());
    }
    let report = check(&cmd::workspace_root())?;
    for problem in &report.problems {
        eprintln!("links: {problem}");
    }
    if report.problems.is_empty() {
        println!(
            "links: {} relative links of {} pages resolve; every page of {GUIDE}/ is reachable \
             from {FRONT}; {} pages with Rust code are doctests",
            report.links, report.pages, report.doctest_pages
        );
        Ok(0)
    } else {
        eprintln!("links: {} problems", report.problems.len());
        Ok(1)
    }
}

/// What a check found.
#[derive(Debug, Default)]
pub struct Report {
    /// Pages checked: the README and the guide.
    pub pages: usize,
    /// Relative links checked.
    pub links: usize,
    /// Pages with Rust code blocks (all of them doctests when no problem says
    /// otherwise).
    pub doctest_pages: usize,
    /// One line each: `page:line: what is wrong`.
    pub problems: Vec<String>,
}

/// Checks the README and the guide of the repository at `root`.
pub fn check(root: &Path) -> Result<Report> {
    let mut pages = vec![PathBuf::from(FRONT)];
    pages.extend(markdown_under(root, Path::new(GUIDE))?);
    let mut cache = Pages::new(root);
    let mut report = Report {
        pages: pages.len(),
        ..Report::default()
    };

    for page in &pages {
        let Some(parsed) = cache.get(page) else {
            report
                .problems
                .push(format!("{}: cannot be read", page.display()));
            continue;
        };
        for link in parsed.links.clone() {
            let place = format!("{}:{}", page.display(), link.line);
            match resolve(page, &link.target) {
                Target::External => {}
                Target::Outside => report.problems.push(format!(
                    "{place}: `{}` leads out of the repository",
                    link.target
                )),
                Target::File { path, anchor } => {
                    report.links += 1;
                    if let Some(problem) = check_target(root, &mut cache, &path, anchor.as_deref())
                    {
                        report
                            .problems
                            .push(format!("{place}: `{}`: {problem}", link.target));
                    }
                }
            }
        }
    }

    let reached = reachable(&mut cache, Path::new(FRONT));
    for page in pages.iter().filter(|p| p.starts_with(GUIDE)) {
        if !reached.contains(page) {
            report.problems.push(format!(
                "{}: no chain of links leads to it from {FRONT}",
                page.display()
            ));
        }
    }

    let included = doctest_includes(root)?;
    for page in &pages {
        if cache.get(page).is_some_and(|p| p.has_rust) {
            report.doctest_pages += 1;
            if !included.contains(page) {
                report.problems.push(format!(
                    "{}: has Rust code blocks, but no crate's src/lib.rs includes it as \
                     doctests (#[cfg(doctest)] #[doc = include_str!(\"../../{}\")])",
                    page.display(),
                    page.display()
                ));
            }
        }
    }
    Ok(report)
}

/// The problem with a link to `path` (relative to `root`) and `anchor`, if any.
fn check_target(
    root: &Path,
    cache: &mut Pages,
    path: &Path,
    anchor: Option<&str>,
) -> Option<String> {
    let full = root.join(path);
    if !full.exists() {
        return Some(format!("{} does not exist", path.display()));
    }
    let anchor = anchor?;
    if is_markdown(path) {
        let page = cache.get(path)?;
        if page.anchors.iter().any(|a| a == anchor) {
            return None;
        }
        let known: Vec<&str> = page.anchors.iter().map(String::as_str).collect();
        return Some(format!(
            "{} has no heading #{anchor} (it has: {})",
            path.display(),
            known.join(", ")
        ));
    }
    // A source file's line anchors (#L10, #L10-L20) are GitHub's own.
    if is_line_anchor(anchor) {
        None
    } else {
        Some(format!(
            "#{anchor} on {}, which is not a Markdown page",
            path.display()
        ))
    }
}

/// Whether `anchor` is GitHub's anchor of a line or a range of lines.
fn is_line_anchor(anchor: &str) -> bool {
    let line = |s: &str| {
        s.strip_prefix('L')
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    };
    match anchor.split_once('-') {
        Some((from, to)) => line(from) && line(to),
        None => line(anchor),
    }
}

fn is_markdown(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "md")
}

/// The Markdown files under `dir` (relative to `root`), sorted, as paths
/// relative to `root`.
fn markdown_under(root: &Path, dir: &Path) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = fs::read_dir(root.join(&dir)) else {
            continue;
        };
        for entry in entries {
            let entry = entry?;
            let path = dir.join(entry.file_name());
            if entry.file_type()?.is_dir() {
                dirs.push(path);
            } else if is_markdown(&path) {
                found.push(path);
            }
        }
    }
    found.sort();
    Ok(found)
}

/// The Markdown pages reachable from `start` by relative links.
fn reachable(cache: &mut Pages, start: &Path) -> BTreeSet<PathBuf> {
    let mut seen = BTreeSet::from([start.to_path_buf()]);
    let mut next = VecDeque::from([start.to_path_buf()]);
    while let Some(page) = next.pop_front() {
        let Some(parsed) = cache.get(&page) else {
            continue;
        };
        for link in parsed.links.clone() {
            if let Target::File { path, .. } = resolve(&page, &link.target) {
                if is_markdown(&path) && seen.insert(path.clone()) {
                    next.push_back(path);
                }
            }
        }
    }
    seen
}

/// The files that a `src/lib.rs` of the workspace's crates includes with
/// `include_str!`, as paths relative to `root`.
fn doctest_includes(root: &Path) -> Result<BTreeSet<PathBuf>> {
    let mut included = BTreeSet::new();
    for entry in fs::read_dir(root)? {
        let src = entry?.path().join("src");
        let Ok(lib) = fs::read_to_string(src.join("lib.rs")) else {
            continue;
        };
        let src = src.strip_prefix(root).unwrap_or(&src).to_path_buf();
        for literal in include_str_paths(&lib) {
            if let Some(path) = normalize(&src.join(literal)) {
                included.insert(path);
            }
        }
    }
    Ok(included)
}

/// The string literals given to `include_str!` in `source`.
fn include_str_paths(source: &str) -> Vec<&str> {
    let mut paths = Vec::new();
    let mut rest = source;
    while let Some(at) = rest.find("include_str!(\"") {
        rest = &rest[at + "include_str!(\"".len()..];
        if let Some(end) = rest.find('"') {
            paths.push(&rest[..end]);
            rest = &rest[end..];
        }
    }
    paths
}

/// Parsed pages, by path relative to the root; `None` for a page that cannot
/// be read.
struct Pages<'a> {
    root: &'a Path,
    parsed: HashMap<PathBuf, Option<Page>>,
}

impl<'a> Pages<'a> {
    fn new(root: &'a Path) -> Self {
        Pages {
            root,
            parsed: HashMap::new(),
        }
    }

    fn get(&mut self, path: &Path) -> Option<&Page> {
        let root = self.root;
        self.parsed
            .entry(path.to_path_buf())
            .or_insert_with(|| fs::read_to_string(root.join(path)).ok().map(|t| parse(&t)))
            .as_ref()
    }
}

/// A link as written, and the line it is on.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Link {
    line: usize,
    target: String,
}

/// What the check needs of a Markdown page.
#[derive(Debug, Default)]
struct Page {
    links: Vec<Link>,
    /// The ids of its headings (and of HTML `id`/`name` attributes).
    anchors: Vec<String>,
    /// Whether rustdoc would compile one of its code blocks.
    has_rust: bool,
}

/// Reads a page: its links and headings outside code, and whether it has
/// Rust code blocks.
fn parse(text: &str) -> Page {
    let mut page = Page::default();
    let mut fence: Option<(char, usize)> = None;
    // The paragraph being read: its first line's number, and its lines.
    let mut paragraph: Option<(usize, Vec<&str>)> = None;
    let mut headings: Vec<String> = Vec::new();
    let mut previous_text: Option<&str> = None;

    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        let trimmed = line.trim_start();
        if let Some((c, n)) = fence {
            let run = trimmed.chars().take_while(|&x| x == c).count();
            if run >= n && trimmed[run..].trim().is_empty() {
                fence = None;
            }
            continue;
        }
        if let Some((c, n, info)) = fence_opening(trimmed) {
            flush(&mut paragraph, &mut page);
            previous_text = None;
            page.has_rust |= is_rust(info);
            fence = Some((c, n));
            continue;
        }
        if trimmed.is_empty() {
            flush(&mut paragraph, &mut page);
            previous_text = None;
            continue;
        }
        if let Some(text) = atx_heading(line) {
            headings.push(text.to_string());
            previous_text = None;
        } else if let (Some(above), true) = (previous_text, is_setext_underline(line)) {
            headings.push(above.trim().to_string());
            previous_text = None;
        } else {
            previous_text = Some(line);
        }
        page.anchors.extend(html_ids(line));
        paragraph
            .get_or_insert_with(|| (number, Vec::new()))
            .1
            .push(line);
    }
    flush(&mut paragraph, &mut page);

    let mut used: HashMap<String, usize> = HashMap::new();
    for heading in headings {
        let base = slug(&heading_text(&heading));
        let n = used.entry(base.clone()).or_insert(0);
        page.anchors.push(if *n == 0 {
            base.clone()
        } else {
            format!("{base}-{n}")
        });
        *n += 1;
    }
    page
}

/// Reads the links of the paragraph being read, if any, and ends it.
fn flush(paragraph: &mut Option<(usize, Vec<&str>)>, page: &mut Page) {
    if let Some((first, lines)) = paragraph.take() {
        page.links.extend(links_in(first, &lines.join("\n")));
    }
}

/// The fence character, its count and the info string of a line that opens a
/// code block.
fn fence_opening(trimmed: &str) -> Option<(char, usize, &str)> {
    let c = trimmed.chars().next().filter(|c| *c == '`' || *c == '~')?;
    let n = trimmed.chars().take_while(|&x| x == c).count();
    let info = trimmed[n..].trim();
    // A backtick fence's info string may not hold a backtick.
    (n >= 3 && !(c == '`' && info.contains('`'))).then_some((c, n, info))
}

/// Whether rustdoc compiles a code block with this info string: no language,
/// or `rust` and rustdoc's own attributes only.
fn is_rust(info: &str) -> bool {
    const ATTRIBUTES: &[&str] = &[
        "rust",
        "ignore",
        "should_panic",
        "no_run",
        "compile_fail",
        "test_harness",
        "standalone_crate",
    ];
    info.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|t| !t.is_empty())
        .all(|t| ATTRIBUTES.contains(&t) || t.starts_with("edition") || t.starts_with("ignore-"))
}

/// The text of an ATX heading (`## Text ##`), if the line is one.
fn atx_heading(line: &str) -> Option<&str> {
    let indent = line.len() - line.trim_start_matches(' ').len();
    if indent > 3 {
        return None;
    }
    let rest = &line[indent..];
    let level = rest.bytes().take_while(|&b| b == b'#').count();
    if !(1..=6).contains(&level) {
        return None;
    }
    let rest = &rest[level..];
    if !(rest.is_empty() || rest.starts_with(' ') || rest.starts_with('\t')) {
        return None;
    }
    let text = rest.trim();
    // An optional closing sequence of #s, after a space.
    let closed = text.trim_end_matches('#');
    if closed.len() < text.len() && (closed.is_empty() || closed.ends_with(' ')) {
        return Some(closed.trim_end());
    }
    Some(text)
}

/// Whether a line underlines the one above as a heading (`===` or `---`).
fn is_setext_underline(line: &str) -> bool {
    let t = line.trim();
    !t.is_empty()
        && line.len() - line.trim_start().len() <= 3
        && (t.bytes().all(|b| b == b'=') || t.bytes().all(|b| b == b'-'))
}

/// The values of `id="..."` and `name="..."` attributes of HTML on a line.
fn html_ids(line: &str) -> Vec<String> {
    let mut ids = Vec::new();
    for attribute in [" id=\"", " name=\""] {
        let mut rest = line;
        while let Some(at) = rest.find(attribute) {
            rest = &rest[at + attribute.len()..];
            if let Some(end) = rest.find('"') {
                ids.push(rest[..end].to_string());
                rest = &rest[end..];
            }
        }
    }
    ids
}

/// A heading's text as GitHub renders it: code spans as their content, links
/// and images as their text, emphasis markers and HTML tags dropped.
fn heading_text(raw: &str) -> String {
    let mut out = String::new();
    let chars: Vec<char> = raw.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '`' | '*' => i += 1,
            '!' if chars.get(i + 1) == Some(&'[') => i += 1,
            '[' => i += 1,
            ']' if chars.get(i + 1) == Some(&'(') => {
                // Skip the link's destination.
                let mut depth = 0;
                i += 1;
                while i < chars.len() {
                    match chars[i] {
                        '(' => depth += 1,
                        ')' => {
                            depth -= 1;
                            if depth == 0 {
                                i += 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                    i += 1;
                }
            }
            ']' => i += 1,
            '<' => match chars[i..].iter().position(|&c| c == '>') {
                Some(end) => i += end + 1,
                None => {
                    out.push('<');
                    i += 1;
                }
            },
            '\\' if i + 1 < chars.len() => {
                out.push(chars[i + 1]);
                i += 2;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

/// GitHub's id for a heading's text: lowercase; letters, digits, `-` and `_`
/// kept; each space turned into `-`; everything else dropped.
fn slug(text: &str) -> String {
    text.trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            '-' | '_' => Some(c),
            c if c.is_alphanumeric() => Some(c),
            _ => None,
        })
        .collect()
}

/// The links of a paragraph whose first line is number `first`: inline links
/// and images `[text](target "title")`, reference definitions
/// `[name]: target`, and HTML `href`/`src` attributes. Code spans are not
/// read.
fn links_in(first: usize, paragraph: &str) -> Vec<Link> {
    let text = blank_code_spans(paragraph);
    let line_at = |offset: usize| first + text[..offset].matches('\n').count();
    let mut links = Vec::new();

    let mut from = 0;
    while let Some(at) = text[from..].find("](") {
        let start = from + at + 2;
        if let Some(target) = destination(&text[start..]) {
            links.push(Link {
                line: line_at(start),
                target: target.to_string(),
            });
        }
        from = start;
    }

    let mut offset = 0;
    for line in text.split('\n') {
        let trimmed = line.trim_start();
        if line.len() - trimmed.len() <= 3 && trimmed.starts_with('[') {
            if let Some((_, rest)) = trimmed.split_once("]:") {
                if let Some(target) = rest.split_whitespace().next() {
                    links.push(Link {
                        line: line_at(offset),
                        target: target.trim_matches(|c| c == '<' || c == '>').to_string(),
                    });
                }
            }
        }
        offset += line.len() + 1;
    }

    for attribute in ["href=\"", "src=\""] {
        let mut from = 0;
        while let Some(at) = text[from..].find(attribute) {
            let start = from + at + attribute.len();
            if let Some(end) = text[start..].find('"') {
                links.push(Link {
                    line: line_at(start),
                    target: text[start..start + end].to_string(),
                });
            }
            from = start;
        }
    }
    links.sort_by_key(|l| l.line);
    links
}

/// The destination of an inline link, from just after its `(`: `<...>`, or
/// up to white space or the `)` that closes it (parentheses may nest).
fn destination(rest: &str) -> Option<&str> {
    let rest = rest.trim_start_matches([' ', '\t']);
    if let Some(inner) = rest.strip_prefix('<') {
        return inner.find('>').map(|end| &inner[..end]);
    }
    let mut depth = 0usize;
    for (i, c) in rest.char_indices() {
        match c {
            '(' => depth += 1,
            ')' if depth == 0 => return Some(&rest[..i]),
            ')' => depth -= 1,
            c if c.is_whitespace() => return (depth == 0).then_some(&rest[..i]),
            _ => {}
        }
    }
    None
}

/// `paragraph` with each code span (a run of backticks, up to the next run
/// of as many) turned into spaces, line breaks kept, so that offsets and
/// line numbers stay. A run with no match is left as it is.
fn blank_code_spans(paragraph: &str) -> String {
    let bytes = paragraph.as_bytes();
    let mut out = paragraph.to_string().into_bytes();
    let run_at = |i: usize| bytes[i..].iter().take_while(|&&b| b == b'`').count();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'`' {
            i += 1;
            continue;
        }
        let n = run_at(i);
        let mut j = i + n;
        let mut close = None;
        while j < bytes.len() {
            if bytes[j] == b'`' {
                let m = run_at(j);
                if m == n {
                    close = Some(j + m);
                    break;
                }
                j += m;
            } else {
                j += 1;
            }
        }
        match close {
            Some(end) => {
                for b in &mut out[i..end] {
                    if *b != b'\n' {
                        *b = b' ';
                    }
                }
                i = end;
            }
            None => i += n,
        }
    }
    // Only ASCII bytes were replaced, by ASCII: still UTF-8.
    String::from_utf8(out).expect("ASCII replaced by ASCII")
}

/// Where a link leads.
#[derive(Debug, PartialEq, Eq)]
enum Target {
    /// Another site, or a scheme such as `mailto:`: not checked.
    External,
    /// A path that climbs above the repository's root.
    Outside,
    /// A file or directory of the repository (relative to its root), and an
    /// anchor in it.
    File {
        path: PathBuf,
        anchor: Option<String>,
    },
}

/// Resolves `target`, a link written in `page` (both relative to the root).
fn resolve(page: &Path, target: &str) -> Target {
    let scheme = target.split_once(':').is_some_and(|(s, _)| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "+.-".contains(c))
    });
    if scheme || target.starts_with("//") {
        return Target::External;
    }
    let (path, anchor) = match target.split_once('#') {
        Some((path, anchor)) => (path, Some(percent_decode(anchor))),
        None => (target, None),
    };
    let path = path.split('?').next().unwrap_or_default();
    let path = percent_decode(path);
    let joined = if path.is_empty() {
        page.to_path_buf()
    } else if let Some(from_root) = path.strip_prefix('/') {
        PathBuf::from(from_root)
    } else {
        page.parent().unwrap_or(Path::new("")).join(&path)
    };
    match normalize(&joined) {
        Some(path) => Target::File { path, anchor },
        None => Target::Outside,
    }
}

/// `path` without `.` and `..` components; `None` if it climbs above the start.
fn normalize(path: &Path) -> Option<PathBuf> {
    let mut parts: Vec<&std::ffi::OsStr> = Vec::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => parts.push(part),
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
        }
    }
    Some(parts.iter().collect())
}

/// `%XX` escapes decoded (a malformed one is kept as written).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// The problem lines of `report`, by page.
    fn by_page(report: &Report) -> BTreeMap<String, Vec<String>> {
        let mut pages: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for problem in &report.problems {
            let page = problem.split(':').next().unwrap_or_default().to_string();
            pages.entry(page).or_default().push(problem.clone());
        }
        pages
    }

    #[test]
    fn slugs_follow_githubs_rule() {
        let id = |h: &str| slug(&heading_text(h));
        assert_eq!(
            id("Check the machine: `nfq-doctor`"),
            "check-the-machine-nfq-doctor"
        );
        assert_eq!(
            id("The reference's API in Rust"),
            "the-references-api-in-rust"
        );
        assert_eq!(
            id("Python: `import netfilterqueue`"),
            "python-import-netfilterqueue"
        );
        assert_eq!(
            id("Verdicts later, from another thread, or in batches"),
            "verdicts-later-from-another-thread-or-in-batches"
        );
        assert_eq!(id("`cargo xtask test-netns`"), "cargo-xtask-test-netns");
        assert_eq!(
            id("Queue flags (`QueueFlags::GSO`)"),
            "queue-flags-queueflagsgso"
        );
        assert_eq!(id("snake_case stays"), "snake_case-stays");
        assert_eq!(
            id("A [linked](other.md#x) **bold** word"),
            "a-linked-bold-word"
        );
        assert_eq!(id("Two  spaces"), "two--spaces");
        assert_eq!(id("Écoute 2.0"), "écoute-20");
    }

    #[test]
    fn repeated_headings_are_numbered_and_code_blocks_are_not_headings() {
        let page = parse(
            "# Title\n\n## Notes\n\n```sh\n# not a heading\n```\n\n## Notes\n\nText\n---\n\n\
             <a name=\"here\"></a>\n",
        );
        assert_eq!(page.anchors, ["here", "title", "notes", "notes-1", "text"]);
    }

    #[test]
    fn atx_headings_with_and_without_closing_hashes() {
        assert_eq!(atx_heading("## Two ##"), Some("Two"));
        assert_eq!(atx_heading("### C#"), Some("C#"));
        assert_eq!(atx_heading("#hashtag"), None);
        assert_eq!(atx_heading("    # indented code"), None);
        assert_eq!(atx_heading("####### seven"), None);
    }

    #[test]
    fn links_are_found_outside_code_only() {
        let page = parse(
            "See [a](a.md) and ![b](img/b.svg \"title\"), [c](<with space.md>),\n\
             `[not](a link)` and ``[nor](this `one`)``, [d](x_(1).md#y).\n\
             A span `over\na line [no](no.md)` ends.\n\n\
             ```rust\nlet s = \"[no](code.md)\";\n```\n\n\
             [ref]: ref.md\n<a href=\"h.md\">h</a>\n",
        );
        let targets: Vec<(usize, &str)> = page
            .links
            .iter()
            .map(|l| (l.line, l.target.as_str()))
            .collect();
        assert_eq!(
            targets,
            [
                (1, "a.md"),
                (1, "img/b.svg"),
                (1, "with space.md"),
                (2, "x_(1).md#y"),
                (10, "ref.md"),
                (11, "h.md"),
            ]
        );
        assert!(page.has_rust);
    }

    #[test]
    fn rust_blocks_are_what_rustdoc_compiles() {
        assert!(is_rust(""));
        assert!(is_rust("rust"));
        assert!(is_rust("rust,no_run"));
        assert!(is_rust("no_run"));
        assert!(is_rust("rust,edition2021"));
        assert!(!is_rust("sh"));
        assert!(!is_rust("text"));
        assert!(!is_rust("python"));
        assert!(!is_rust("rust,ignore,toml"));
        assert!(!parse("```sh\nls\n```\n~~~text\nx\n~~~\n").has_rust);
        assert!(parse("````\nfn main() {}\n````\n").has_rust);
    }

    #[test]
    fn targets_resolve_against_the_page() {
        let docs = Path::new("docs/core.md");
        let file = |p: &str, a: Option<&str>| Target::File {
            path: PathBuf::from(p),
            anchor: a.map(String::from),
        };
        assert_eq!(
            resolve(docs, "kernel.md#limits"),
            file("docs/kernel.md", Some("limits"))
        );
        assert_eq!(resolve(docs, "../README.md"), file("README.md", None));
        assert_eq!(resolve(docs, "./../.ci/run"), file(".ci/run", None));
        assert_eq!(
            resolve(docs, "#counters"),
            file("docs/core.md", Some("counters"))
        );
        assert_eq!(
            resolve(docs, "/fuzz/README.md"),
            file("fuzz/README.md", None)
        );
        assert_eq!(resolve(docs, "a%20b.md"), file("docs/a b.md", None));
        assert_eq!(resolve(docs, "../../elsewhere.md"), Target::Outside);
        assert_eq!(resolve(docs, "https://github.com/x/y"), Target::External);
        assert_eq!(
            resolve(docs, "mailto:someone@example.org"),
            Target::External
        );
        assert_eq!(resolve(docs, "//example.org/x"), Target::External);
    }

    #[test]
    fn line_anchors_of_source_files_are_accepted() {
        assert!(is_line_anchor("L10"));
        assert!(is_line_anchor("L10-L20"));
        assert!(!is_line_anchor("L"));
        assert!(!is_line_anchor("section"));
    }

    #[test]
    fn include_str_literals_are_read() {
        let lib = "#[doc = include_str!(\"../../README.md\")]\nstruct A;\n\
                   #[doc = include_str!(\"../../docs/core.md\")]\nstruct B;\n";
        assert_eq!(
            include_str_paths(lib),
            ["../../README.md", "../../docs/core.md"]
        );
    }

    /// A repository in a temporary directory, removed when dropped.
    struct Repo(PathBuf);

    impl Repo {
        fn new(name: &str, files: &[(&str, &str)]) -> Repo {
            let dir =
                std::env::temp_dir().join(format!("xtask-links-{name}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            for (path, text) in files {
                let path = dir.join(path);
                fs::create_dir_all(path.parent().unwrap()).unwrap();
                fs::write(path, text).unwrap();
            }
            Repo(dir)
        }
    }

    impl Drop for Repo {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    const LIB: &str =
        "#[cfg(doctest)]\n#[doc = include_str!(\"../../docs/a.md\")]\npub struct A;\n";

    #[test]
    fn a_repository_that_holds_together_passes() {
        let repo = Repo::new(
            "good",
            &[
                (
                    "README.md",
                    "# R\n\n[a](docs/a.md#part-one) and [src](lib/src/lib.rs#L2)\n",
                ),
                (
                    "docs/a.md",
                    "# A\n\n## Part one\n\n[b](b.md)\n\n```rust\nfn f() {}\n```\n",
                ),
                (
                    "docs/b.md",
                    "# B\n\nBack to [the top](../README.md#r), [here](#b).\n",
                ),
                ("lib/src/lib.rs", LIB),
            ],
        );
        let report = check(&repo.0).unwrap();
        assert_eq!(report.problems, Vec::<String>::new());
        assert_eq!(
            (report.pages, report.links, report.doctest_pages),
            (3, 5, 1)
        );
    }

    #[test]
    fn every_kind_of_problem_is_reported_with_its_place() {
        let repo = Repo::new(
            "bad",
            &[
                (
                    "README.md",
                    "# R\n\n[gone](docs/gone.md)\n[a](docs/a.md#no-such-part)\n\
                     [up](../../outside.md) [file](lib/src/lib.rs#top)\n",
                ),
                ("docs/a.md", "# A\n\n```\nfn f() {}\n```\n"),
                ("docs/lonely.md", "# Nobody links here\n"),
                ("lib/src/lib.rs", "// no includes\n"),
            ],
        );
        let report = check(&repo.0).unwrap();
        let problems = by_page(&report);
        let readme = problems["README.md"].join("\n");
        assert!(
            readme.contains("README.md:3: `docs/gone.md`: docs/gone.md does not exist"),
            "{readme}"
        );
        assert!(readme.contains("README.md:4: `docs/a.md#no-such-part`: docs/a.md has no heading #no-such-part (it has: a)"), "{readme}");
        assert!(
            readme.contains("README.md:5: `../../outside.md` leads out of the repository"),
            "{readme}"
        );
        assert!(
            readme.contains("#top on lib/src/lib.rs, which is not a Markdown page"),
            "{readme}"
        );
        assert!(
            problems["docs/lonely.md"][0].contains("no chain of links leads to it from README.md")
        );
        assert!(problems["docs/a.md"][0]
            .contains("has Rust code blocks, but no crate's src/lib.rs includes it"));
        assert_eq!(report.problems.len(), 6, "{:#?}", report.problems);
    }
}
