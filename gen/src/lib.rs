//! Synthetic base data for demos, tests and benchmarks: `basedata gen`
//! writes one update file (the NDJSON of `POST /v1/datasets/{id}/updates`)
//! per catalog dataset, describing a made-up population of Guangzhou and
//! Shenzhen residents and the organizations registered there.
//!
//! The data are meant to be believable to someone reading them and
//! consistent across datasets, because verification and comparison tests
//! ask questions whose answers must be known: every person has a household
//! registration; every deceased one also has a death record; married couples
//! are pairs of generated persons who both carry a marriage record; legal
//! representatives are generated adults whose registered name is the one on
//! the company record.
//!
//! Everything about subject `i` is computed from the configuration and `i`
//! alone. Keys depend only on `(seed, i)`: they come from a keyed bijection
//! of the index onto (area code, birth date, sequence number) or onto
//! organization codes, so they are unique by construction for any
//! population size. The rest may also depend on the population (a child's
//! parents are a couple drawn from the generated persons). So
//! `person_key`, `entity_key` and `person_hukou` answer for one subject
//! without generating the others, and generation streams subject by subject
//! in bounded memory. The hot loop writes JSON by hand into reused buffers,
//! since benchmarks generate tens of millions of persons.

use std::fs;
use std::io::{self, BufWriter, Write as _};
use std::path::Path;
use std::sync::OnceLock;

use basedata_store::catalog::{Catalog, Dataset, Field, FieldType};
use basedata_store::keys::{DocKey, DocType, EntityKey, PersonKey, Subject, SubjectKey};
use time::macros::date;
use time::Date;

/// What to generate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GenConfig {
    pub persons: u64,
    pub entities: u64,
    pub seed: u64,
}

/// What was generated.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GenSummary {
    /// Lines written per dataset, in catalog order.
    pub per_dataset: Vec<(String, u64)>,
}

/// Streams the update lines of every dataset of `catalog`: for each line,
/// `sink(dataset_id, line)` with the line's JSON and no newline. Lines of one
/// dataset come in subject order (person 0 first), datasets interleaved.
pub fn generate(
    cfg: &GenConfig,
    catalog: &Catalog,
    sink: &mut dyn FnMut(&str, &[u8]) -> io::Result<()>,
) -> io::Result<GenSummary> {
    let ids: Vec<&str> = catalog.datasets().iter().map(|d| d.id.as_str()).collect();
    run(cfg, catalog, &mut |ds, line| sink(ids[ds], line))
}

/// Writes `DATASET.ndjson` for every dataset of `catalog` into `dir`,
/// creating it if needed. Files of datasets without lines are still created,
/// empty, so that a load script can iterate over the catalog.
pub fn write_files(cfg: &GenConfig, catalog: &Catalog, dir: &Path) -> io::Result<GenSummary> {
    fs::create_dir_all(dir)?;
    let mut files = catalog
        .datasets()
        .iter()
        .map(|d| {
            Ok(BufWriter::with_capacity(
                1 << 20,
                fs::File::create(dir.join(format!("{}.ndjson", d.id)))?,
            ))
        })
        .collect::<io::Result<Vec<_>>>()?;
    let summary = run(cfg, catalog, &mut |ds, line| {
        let f = &mut files[ds];
        f.write_all(line)?;
        f.write_all(b"\n")
    })?;
    for f in &mut files {
        f.flush()?;
    }
    Ok(summary)
}

/// The key of generated person `i` (0-based). Panics beyond the capacity of
/// the key space (about 540 million persons).
pub fn person_key(cfg: &GenConfig, i: u64) -> PersonKey {
    World::new(cfg).person(i).key
}

/// The key of generated entity `i` (0-based). Panics beyond the capacity of
/// the key space (about 990 million organizations).
pub fn entity_key(cfg: &GenConfig, i: u64) -> EntityKey {
    World::new(cfg).entity(i).key
}

/// Number `i` (0-based) of a generated document of type `doc`: a valid key
/// of that type, distinct for distinct `i` (a keyed permutation of the
/// index, as for citizen IDs), depending only on `(seed, doc, i)`.
///
/// - citizen ID and credit code: those of person or entity `i`;
/// - passport: a Chinese ordinary passport, `E` or `G` and 8 digits;
/// - permit: in turn a Hong Kong (`H`), Macao (`M`) and Taiwan (8 digits) one;
/// - permanent residence card: the 2023 card, `9`, a province, a
///   nationality, a birth date in 1950–1999, a sequence number, the check;
/// - business licence: a Guangzhou or Shenzhen registration number with its
///   MOD 11,10 check digit.
///
/// Panics beyond the type's key space (at least 18 million numbers).
pub fn doc_key(cfg: &GenConfig, doc: DocType, i: u64) -> SubjectKey {
    const PURPOSE: u64 = 0x646f_6300;
    let perm = |domain: u64| Feistel::new(domain, cfg.seed, PURPOSE + u64::from(doc.as_u8())).permute(i);
    let complete = |body: String| match DocKey::complete(doc, &body) {
        Ok(k) => SubjectKey::Document(k),
        Err(e) => unreachable!("generated {doc:?} body is valid: {e}"),
    };
    match doc {
        DocType::CitizenId => SubjectKey::Person(person_key(cfg, i)),
        DocType::UnifiedCreditCode => SubjectKey::Entity(entity_key(cfg, i)),
        DocType::Passport => {
            let n = perm(2 * 100_000_000);
            complete(format!("{}{:08}", if n % 2 == 0 { 'E' } else { 'G' }, n / 2))
        }
        DocType::HkMacaoTaiwanPermit => {
            let n = perm(3 * 100_000_000);
            let prefix = ["H", "M", ""][(n % 3) as usize];
            complete(format!("{prefix}{:08}", n / 3))
        }
        DocType::ForeignPermanentResidence => {
            // 2 provinces x 4 nationalities x 18,262 days x 125 sequence numbers.
            const DAYS: u64 = 18_262;
            let n = perm(2 * 4 * DAYS * 125);
            let province = ["44", "31"][(n % 2) as usize];
            let nation = ["840", "826", "392", "410"][(n / 2 % 4) as usize];
            let birth = jd(date!(1950 - 01 - 01).to_julian_day() + (n / 8 % DAYS) as i32);
            let seq = n / 8 / DAYS;
            let (y, m, d) = (birth.year(), u8::from(birth.month()), birth.day());
            complete(format!("9{province}{nation}{y:04}{m:02}{d:02}{seq:03}"))
        }
        DocType::BusinessLicence => {
            let n = perm(2 * 100_000_000);
            complete(format!("{}{:08}", ["440100", "440300"][(n % 2) as usize], n / 2))
        }
    }
}

/// The fields of person `i`'s household registration (`hukou`) exactly as
/// the generated file has them for the built-in catalog.
pub fn person_hukou(cfg: &GenConfig, i: u64) -> serde_json::Map<String, serde_json::Value> {
    static HUKOU: OnceLock<Option<Dataset>> = OnceLock::new();
    let Some(ds) = HUKOU.get_or_init(|| Catalog::builtin().dataset("hukou").cloned()) else {
        return serde_json::Map::new();
    };
    let world = World::new(cfg);
    let plan = Plan::new(ds);
    let p = world.person(i);
    let mut out = Out::default();
    match world.person_line(&plan, &p, None, &mut out) {
        Some(line) => {
            let mut v: serde_json::Value =
                serde_json::from_slice(line).expect("generated lines are JSON");
            match v.get_mut("fields").map(serde_json::Value::take) {
                Some(serde_json::Value::Object(m)) => m,
                _ => serde_json::Map::new(),
            }
        }
        None => serde_json::Map::new(),
    }
}

fn run(
    cfg: &GenConfig,
    catalog: &Catalog,
    sink: &mut dyn FnMut(usize, &[u8]) -> io::Result<()>,
) -> io::Result<GenSummary> {
    let world = World::new(cfg);
    if cfg.persons > world.person_capacity() || cfg.entities > ENTITY_SPACE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "at most {} persons and {} entities can be generated",
                world.person_capacity(),
                ENTITY_SPACE
            ),
        ));
    }
    let plans: Vec<Plan> = catalog.datasets().iter().map(Plan::new).collect();
    let person_plans: Vec<usize> = (0..plans.len())
        .filter(|&d| plans[d].ds.subject == Subject::Person)
        .collect();
    let entity_plans: Vec<usize> = (0..plans.len())
        .filter(|&d| plans[d].ds.subject == Subject::Entity)
        .collect();
    let mut counts = vec![0u64; plans.len()];
    let mut out = Out::default();

    // Persons 2j and 2j+1 are a man and a woman of similar age (see
    // `World::person_slot`); handling them together gives each the other
    // as a possible spouse without recomputing anything.
    let mut j = 0u64;
    while 2 * j < cfg.persons {
        let man = world.person(2 * j);
        let woman = (2 * j + 1 < cfg.persons).then(|| world.person(2 * j + 1));
        let couple = woman
            .as_ref()
            .and_then(|w| world.couple(j, &man.vital(), &w.vital()));
        for (p, spouse) in [(Some(&man), woman.as_ref()), (woman.as_ref(), Some(&man))] {
            let Some(p) = p else { continue };
            let spouse = spouse.zip(couple.as_ref());
            for &d in &person_plans {
                if let Some(line) = world.person_line(&plans[d], p, spouse, &mut out) {
                    sink(d, line)?;
                    counts[d] += 1;
                }
            }
        }
        j += 1;
    }
    for i in 0..cfg.entities {
        let e = world.entity(i);
        for &d in &entity_plans {
            if let Some(line) = world.entity_line(&plans[d], &e, &mut out) {
                sink(d, line)?;
                counts[d] += 1;
            }
        }
    }
    Ok(GenSummary {
        per_dataset: plans
            .iter()
            .zip(counts)
            .map(|(p, n)| (p.ds.id.clone(), n))
            .collect(),
    })
}

// ---------------------------------------------------------------------------
// Randomness: everything is derived from (seed, purpose, index) so that any
// subject can be generated on its own.

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A small counter-based generator (SplitMix64). Its own code rather than a
/// library's so that the files of a seed never change with a dependency.
#[derive(Clone, Debug)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64, purpose: u64, i: u64) -> Rng {
        Rng(mix(
            mix(seed ^ purpose.wrapping_mul(0x9E37_79B9_7F4A_7C15)) ^ i
        ))
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }

    /// Uniform in `0..n` (`n > 0`).
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next()) * u128::from(n)) >> 64) as u64
    }

    fn index(&mut self, n: usize) -> usize {
        self.below(n as u64) as usize
    }

    fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.index(items.len())]
    }

    /// Index into `items` skewed towards the front, the way surnames and
    /// ordinary values are more common than rare ones.
    fn skewed(&mut self, n: usize) -> usize {
        let u = self.below(1 << 20);
        ((u * u * n as u64) >> 40) as usize
    }

    /// A day in `lo..=hi` (or `lo` when the range is empty).
    fn date(&mut self, lo: Date, hi: Date) -> Date {
        let (a, b) = (lo.to_julian_day(), hi.to_julian_day());
        if b <= a {
            return lo;
        }
        jd(a + self.below((b - a + 1) as u64) as i32)
    }

    fn digits(&mut self, out: &mut String, n: usize) {
        for _ in 0..n {
            out.push(char::from(b'0' + self.below(10) as u8));
        }
    }
}

/// FNV-1a, to turn a dataset id into a stable purpose for its records.
fn tag(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

const TAG_PERSON_PERM: u64 = 1;
const TAG_ENTITY_PERM: u64 = 2;
const TAG_PERSON: u64 = 3;
const TAG_ENTITY: u64 = 4;
const TAG_COUPLE: u64 = 5;
const TAG_ADDRESS: u64 = 6;
const TAG_WIFE_REGION: u64 = 7;
const TAG_WIFE_DAY: u64 = 8;
const TAG_PARENTS: u64 = 9;
const TAG_ORIGIN: u64 = 10;

/// A keyed permutation of `0..domain`: a balanced Feistel network on the
/// smallest even number of bits covering the domain, with cycle walking to
/// stay inside it. Bijective whatever the keys, so distinct indices give
/// distinct keys without any bookkeeping.
#[derive(Debug)]
struct Feistel {
    half: u32,
    mask: u64,
    keys: [u64; 4],
    domain: u64,
}

impl Feistel {
    fn new(domain: u64, seed: u64, purpose: u64) -> Feistel {
        let bits = (64 - (domain.max(2) - 1).leading_zeros()).max(2);
        let half = bits.div_ceil(2);
        let mut rng = Rng::new(seed, purpose, 0);
        Feistel {
            half,
            mask: (1 << half) - 1,
            keys: [rng.next(), rng.next(), rng.next(), rng.next()],
            domain,
        }
    }

    fn round_trip(&self, x: u64) -> u64 {
        let (mut l, mut r) = (x >> self.half, x & self.mask);
        for k in self.keys {
            let t = l ^ (mix(r ^ k) & self.mask);
            l = r;
            r = t;
        }
        (l << self.half) | r
    }

    fn permute(&self, x: u64) -> u64 {
        assert!(x < self.domain, "index beyond the generator's key space");
        let mut y = self.round_trip(x);
        while y >= self.domain {
            y = self.round_trip(y);
        }
        y
    }
}

// ---------------------------------------------------------------------------
// Dates.

/// The day the generated data describe: nothing happens after it.
const AS_OF: Date = date!(2025 - 12 - 31);
const FIRST_BIRTH_YEAR: i32 = 1930;
/// Birth certificates (出生医学证明) have existed since 1996.
const BIRTH_CERTIFICATES_FROM: Date = date!(1996 - 01 - 01);
/// Random probes for a child's parents; most children born since 1996 find
/// a couple within a few.
const PARENT_PROBES: usize = 48;
/// Birth years come in bands of five years, 1930–2024.
const BANDS: usize = 19;
const BAND_YEARS: i32 = 5;

fn jd(day: i32) -> Date {
    Date::from_julian_day(day).expect("generated dates stay within the calendar")
}

fn add_days(d: Date, n: i64) -> Date {
    jd(d.to_julian_day() + n as i32)
}

fn add_years(d: Date, years: i32) -> Date {
    jd(d.to_julian_day() + years * 365 + years / 4)
}

fn min_date(a: Date, b: Date) -> Date {
    a.min(b)
}

/// Completed years of age on `at`.
fn age_at(birth: Date, at: Date) -> i32 {
    let mut a = at.year() - birth.year();
    if (u8::from(at.month()), at.day()) < (u8::from(birth.month()), birth.day()) {
        a -= 1;
    }
    a
}

fn ymd(y: i32, m: u8, d: u8) -> Date {
    Date::from_calendar_date(y, time::Month::try_from(m).expect("valid month"), d)
        .expect("valid date")
}

// ---------------------------------------------------------------------------
// Places.

struct Region {
    code: &'static str,
    province: &'static str,
    city: &'static str,
    district: &'static str,
    towns: &'static [&'static str],
}

/// Districts of Guangzhou and Shenzhen come first (`LOCAL` of them): people
/// are registered there and organizations located there. The rest are
/// birthplaces of people who moved in.
#[rustfmt::skip]
const REGIONS: [Region; 30] = [
    Region { code: "440103", province: "广东省", city: "广州市", district: "荔湾区", towns: &["沙面街", "华林街", "逢源街", "多宝街", "彩虹街", "南源街"] },
    Region { code: "440104", province: "广东省", city: "广州市", district: "越秀区", towns: &["北京街", "农林街", "东山街", "大塘街", "流花街", "六榕街"] },
    Region { code: "440105", province: "广东省", city: "广州市", district: "海珠区", towns: &["赤岗街", "新港街", "昌岗街", "江南中街", "滨江街", "琶洲街"] },
    Region { code: "440106", province: "广东省", city: "广州市", district: "天河区", towns: &["石牌街", "林和街", "沙河街", "五山街", "员村街", "天河南街"] },
    Region { code: "440111", province: "广东省", city: "广州市", district: "白云区", towns: &["三元里街", "景泰街", "同德街", "新市街", "棠景街", "京溪街"] },
    Region { code: "440112", province: "广东省", city: "广州市", district: "黄埔区", towns: &["黄埔街", "大沙街", "红山街", "鱼珠街", "长洲街", "文冲街"] },
    Region { code: "440113", province: "广东省", city: "广州市", district: "番禺区", towns: &["市桥街", "沙头街", "东环街", "桥南街", "大石街", "洛浦街"] },
    Region { code: "440114", province: "广东省", city: "广州市", district: "花都区", towns: &["新华街", "新雅街", "秀全街", "花城街"] },
    Region { code: "440115", province: "广东省", city: "广州市", district: "南沙区", towns: &["南沙街", "珠江街", "龙穴街", "黄阁镇"] },
    Region { code: "440117", province: "广东省", city: "广州市", district: "从化区", towns: &["街口街", "江埔街", "城郊街", "太平镇"] },
    Region { code: "440118", province: "广东省", city: "广州市", district: "增城区", towns: &["荔城街", "增江街", "朱村街", "永宁街"] },
    Region { code: "440303", province: "广东省", city: "深圳市", district: "罗湖区", towns: &["桂园街道", "黄贝街道", "东门街道", "翠竹街道", "南湖街道", "莲塘街道"] },
    Region { code: "440304", province: "广东省", city: "深圳市", district: "福田区", towns: &["园岭街道", "南园街道", "福田街道", "沙头街道", "香蜜湖街道", "梅林街道"] },
    Region { code: "440305", province: "广东省", city: "深圳市", district: "南山区", towns: &["南头街道", "南山街道", "沙河街道", "蛇口街道", "招商街道", "粤海街道"] },
    Region { code: "440306", province: "广东省", city: "深圳市", district: "宝安区", towns: &["新安街道", "西乡街道", "福永街道", "沙井街道", "松岗街道", "石岩街道"] },
    Region { code: "440307", province: "广东省", city: "深圳市", district: "龙岗区", towns: &["平湖街道", "布吉街道", "坂田街道", "横岗街道", "龙城街道", "龙岗街道"] },
    Region { code: "440308", province: "广东省", city: "深圳市", district: "盐田区", towns: &["梅沙街道", "盐田街道", "沙头角街道", "海山街道"] },
    Region { code: "440309", province: "广东省", city: "深圳市", district: "龙华区", towns: &["观湖街道", "民治街道", "龙华街道", "大浪街道", "观澜街道"] },
    Region { code: "440310", province: "广东省", city: "深圳市", district: "坪山区", towns: &["坪山街道", "马峦街道", "碧岭街道", "石井街道"] },
    Region { code: "440311", province: "广东省", city: "深圳市", district: "光明区", towns: &["光明街道", "公明街道", "新湖街道", "凤凰街道"] },
    Region { code: "360102", province: "江西省", city: "南昌市", district: "东湖区", towns: &["公园街道", "百花洲街道", "豫章街道"] },
    Region { code: "430104", province: "湖南省", city: "长沙市", district: "岳麓区", towns: &["望月湖街道", "岳麓街道", "桔子洲街道"] },
    Region { code: "450103", province: "广西壮族自治区", city: "南宁市", district: "青秀区", towns: &["新竹街道", "中山街道", "津头街道"] },
    Region { code: "510104", province: "四川省", city: "成都市", district: "锦江区", towns: &["春熙路街道", "书院街街道", "合江亭街道"] },
    Region { code: "110105", province: "北京市", city: "北京市", district: "朝阳区", towns: &["建外街道", "朝外街道", "呼家楼街道"] },
    Region { code: "420106", province: "湖北省", city: "武汉市", district: "武昌区", towns: &["积玉桥街道", "中华路街道", "杨园街道"] },
    Region { code: "441302", province: "广东省", city: "惠州市", district: "惠城区", towns: &["桥西街道", "江南街道", "河南岸街道"] },
    Region { code: "440604", province: "广东省", city: "佛山市", district: "禅城区", towns: &["祖庙街道", "石湾镇街道", "张槎街道"] },
    Region { code: "445202", province: "广东省", city: "揭阳市", district: "榕城区", towns: &["榕华街道", "新兴街道", "中山街道"] },
    Region { code: "350102", province: "福建省", city: "福州市", district: "鼓楼区", towns: &["鼓东街道", "鼓西街道", "温泉街道"] },
];
const LOCAL: usize = 20;
const GUANGXI: usize = 22;

fn is_local(r: usize) -> bool {
    r < LOCAL
}

/// Region classes within which a wife's birthplace is drawn from her
/// husband's slot: members of a class have equal slot capacity.
fn region_class(r: usize) -> (usize, usize) {
    if is_local(r) {
        (0, LOCAL)
    } else {
        (LOCAL, REGIONS.len())
    }
}

/// The town name without its 街/街道/镇, as police stations are named.
fn town_stem(town: &str) -> &str {
    town.strip_suffix("街道")
        .or_else(|| town.strip_suffix('街'))
        .or_else(|| town.strip_suffix('镇'))
        .unwrap_or(town)
}

fn district_stem(r: &Region) -> &str {
    r.district.strip_suffix('区').unwrap_or(r.district)
}

const ROADS_GZ: &[&str] = &[
    "中山大道",
    "天河路",
    "黄埔大道",
    "广州大道",
    "解放北路",
    "东风中路",
    "环市东路",
    "江南大道",
    "工业大道",
    "新港西路",
    "白云大道",
    "广园中路",
    "番禺大道",
    "迎宾路",
    "花城大道",
    "体育西路",
    "天河北路",
    "滨江东路",
];
const ROADS_SZ: &[&str] = &[
    "深南大道",
    "滨河大道",
    "北环大道",
    "红荔路",
    "华强北路",
    "科苑路",
    "南海大道",
    "宝安大道",
    "龙岗大道",
    "布龙路",
    "沙河西路",
    "梅林路",
    "民治大道",
    "留仙大道",
    "光明大道",
    "福华路",
    "新安路",
    "海德三道",
];
const ROADS_OTHER: &[&str] = &[
    "人民路",
    "解放路",
    "中山路",
    "建设路",
    "八一路",
    "五一路",
    "胜利路",
    "和平路",
    "新华路",
    "长江路",
];

fn roads(r: &Region) -> &'static [&'static str] {
    match r.city {
        "广州市" => ROADS_GZ,
        "深圳市" => ROADS_SZ,
        _ => ROADS_OTHER,
    }
}

fn phone_area(r: &Region) -> &'static str {
    match r.city {
        "广州市" => "020-",
        "深圳市" => "0755-",
        _ => "0",
    }
}

const HOSPITALS_GZ: &[&str] = &[
    "中山大学附属第一医院",
    "南方医科大学南方医院",
    "广东省人民医院",
    "广州市第一人民医院",
    "广州市妇女儿童医疗中心",
    "广州医科大学附属第一医院",
    "暨南大学附属第一医院",
    "广州市红十字会医院",
];
const HOSPITALS_SZ: &[&str] = &[
    "深圳市人民医院",
    "北京大学深圳医院",
    "香港大学深圳医院",
    "深圳市妇幼保健院",
    "南方科技大学医院",
    "深圳市第二人民医院",
    "中山大学附属第七医院",
    "深圳市宝安区人民医院",
];

// ---------------------------------------------------------------------------
// Names and words.

const SURNAMES: &[&str] = &[
    "王", "李", "张", "刘", "陈", "杨", "黄", "赵", "吴", "周", "徐", "孙", "马", "朱", "胡", "郭",
    "何", "林", "罗", "高", "郑", "梁", "谢", "宋", "唐", "许", "韩", "冯", "邓", "曹", "彭", "曾",
    "肖", "田", "董", "袁", "潘", "于", "蒋", "蔡", "余", "杜", "叶", "程", "苏", "魏", "吕", "丁",
    "任", "沈", "姚", "卢", "姜", "崔", "钟", "谭", "陆", "汪", "范", "金", "石", "廖", "贾", "夏",
    "韦", "付", "方", "白", "邹", "孟", "熊", "秦", "邱", "江", "尹", "薛", "闫", "段", "雷", "侯",
    "龙", "史", "陶", "黎", "贺", "顾", "毛", "郝", "龚", "邵", "万", "钱", "严", "覃", "武", "戴",
    "莫", "孔", "向", "汤", "欧阳", "司马", "上官", "诸葛",
];

/// Given-name characters: men's, then women's, then either.
const GIVEN: &[&str] = &[
    // men (60)
    "伟", "强", "军", "磊", "洋", "勇", "杰", "涛", "斌", "超", "明", "刚", "平", "辉", "鹏", "华",
    "飞", "鑫", "波", "宇", "浩", "凯", "健", "俊", "帆", "帅", "旭", "宁", "龙", "林", "海", "峰",
    "建", "国", "志", "文", "东", "德", "成", "亮", "振", "兴", "坤", "豪", "博", "毅", "锋", "彬",
    "昊", "轩", "泽", "栋", "松", "荣", "庆", "祥", "光", "永", "立", "福",
    // women (60)
    "芳", "娜", "敏", "静", "丽", "艳", "娟", "霞", "秀", "玲", "桂", "英", "梅", "琳", "燕", "萍",
    "红", "婷", "雪", "慧", "莉", "倩", "颖", "琴", "兰", "云", "洁", "怡", "悦", "晶", "露", "瑶",
    "萱", "琪", "蕾", "薇", "璐", "梦", "妍", "媛", "婧", "雯", "菲", "蓉", "凤", "珍", "月", "春",
    "丹", "琼", "岚", "彤", "馨", "诗", "雅", "柔", "素", "淑", "佩", "欢",
    // either (40)
    "子", "一", "思", "雨", "天", "安", "可", "语", "若", "心", "逸", "睿", "宏", "金", "家", "新",
    "诚", "世", "维", "方", "学", "承", "远", "清", "泉", "锦", "正", "晓", "嘉", "佳", "欣", "晨",
    "阳", "瑞", "琦", "然", "乐", "宜", "沐", "航",
];
const GIVEN_MEN: (usize, usize) = (0, 60);
const GIVEN_WOMEN: (usize, usize) = (60, 120);
const GIVEN_EITHER: (usize, usize) = (120, 160);

/// Ethnic groups other than Han (01), by rough frequency in the region.
const MINORITIES: &[&str] = &[
    "08", "08", "08", "15", "03", "11", "06", "13", "12", "07", "02", "05", "10", "04", "19", "22",
    "09", "14",
];

const BRAND_A: &[&str] = &[
    "华", "宏", "金", "恒", "鼎", "瑞", "博", "嘉", "天", "中", "汇", "创", "优", "星", "云", "海",
    "凯", "正", "安", "德", "新", "明", "卓", "远", "锦", "聚", "同", "万", "东", "南", "鹏", "银",
    "智", "永", "伟", "盛", "启", "立", "兴", "和",
];
const BRAND_B: &[&str] = &[
    "信", "达", "源", "通", "盛", "丰", "远", "禾", "成", "科", "智", "新", "品", "辰", "帆", "纳",
    "越", "泰", "润", "锐", "辉", "航", "程", "力", "创", "象", "方", "粤", "城", "河", "联", "美",
    "业", "邦", "利", "昌", "诚", "宇", "恒", "鑫",
];

/// Line of business: the word in a company name, its industry code
/// (GB/T 4754 section) and a business scope.
#[rustfmt::skip]
const TRADES: &[(&str, &str, &str)] = &[
    ("科技", "I", "技术开发、技术咨询、技术服务；软件开发"),
    ("信息技术", "I", "信息系统集成服务；信息技术咨询服务；软件开发"),
    ("网络科技", "I", "互联网信息服务；网络技术开发；数据处理服务"),
    ("贸易", "F", "商品批发贸易（许可审批类商品除外）；货物进出口"),
    ("商贸", "F", "日用百货批发；五金产品零售；电子产品销售"),
    ("电子商务", "F", "互联网销售（除销售需要许可的商品）；日用品销售"),
    ("餐饮管理", "H", "餐饮管理；餐饮服务；食品销售"),
    ("建筑工程", "E", "房屋建筑和市政基础设施项目工程总承包；建筑劳务分包"),
    ("装饰工程", "E", "住宅室内装饰装修；建筑装饰材料销售"),
    ("物业管理", "K", "物业管理；停车场服务；家政服务"),
    ("文化传播", "R", "组织文化艺术交流活动；广告设计、代理；会议及展览服务"),
    ("生物科技", "M", "生物技术推广服务；医学研究和试验发展"),
    ("投资咨询", "L", "以自有资金从事投资活动；企业管理咨询；信息咨询服务"),
    ("物流", "G", "普通货物仓储服务；国内货物运输代理；道路货物运输"),
    ("教育咨询", "P", "教育咨询服务；业务培训（不含需取得许可的培训）"),
    ("医疗器械", "F", "第一类医疗器械销售；第二类医疗器械销售"),
    ("服装", "C", "服装制造；服装服饰批发；服装服饰零售"),
    ("食品", "C", "食品生产；食品销售；农副产品销售"),
    ("电子", "C", "电子元器件制造；电子产品销售；集成电路设计"),
    ("汽车服务", "O", "汽车装饰用品销售；机动车修理和维护；汽车租赁"),
    ("供应链管理", "L", "供应链管理服务；国内贸易代理；货物进出口"),
    ("环保科技", "N", "环保咨询服务；水污染治理；固体废物治理"),
];
const SHOPS: &[(&str, &str, &str)] = &[
    ("便利店", "F", "日用百货、预包装食品零售"),
    ("士多店", "F", "预包装食品、烟草制品零售"),
    ("餐饮店", "H", "餐饮服务"),
    ("快餐店", "H", "快餐服务"),
    ("五金店", "F", "五金产品零售"),
    ("水果店", "F", "新鲜水果零售"),
    ("理发店", "O", "理发及美容服务"),
    ("服装店", "F", "服装零售"),
    ("手机维修店", "O", "日用电器修理；通讯设备零售"),
    ("粮油店", "F", "粮油零售"),
    ("茶庄", "F", "茶叶零售"),
    ("文具店", "F", "文具用品零售"),
];
const COOP_WORDS: &[&str] = &["果蔬", "农机", "养殖", "茶叶", "花卉", "水产"];
const GROUP_WORDS: &[&str] = &[
    "软件行业",
    "餐饮行业",
    "摄影",
    "书法",
    "老年人体育",
    "青年创业",
    "物流行业",
    "志愿者",
    "围棋",
    "跨境电商",
];
const PNE_WORDS: &[(&str, &str)] = &[
    ("社会工作服务中心", "社会工作服务；社区服务；志愿服务组织"),
    ("培训中心", "非学历职业技能培训"),
    ("康复中心", "残疾儿童康复训练"),
    ("幼儿园", "学前教育"),
    ("文化艺术中心", "文化艺术交流；公益演出"),
    ("社区服务中心", "社区居家养老服务；社区便民服务"),
];
const PUBLIC_WORDS: &[&str] = &[
    "政务服务中心",
    "社区卫生服务中心",
    "图书馆",
    "文化馆",
    "疾病预防控制中心",
    "环境监测站",
    "公证处",
    "档案馆",
];
const BUREAUS: &[&str] = &[
    "民政局",
    "教育局",
    "卫生健康局",
    "文化广电旅游体育局",
    "科学技术局",
    "工业和信息化局",
    "人力资源和社会保障局",
];
const COMMUNITIES: &[&str] = &[
    "华景社区居委会",
    "金穗社区居委会",
    "龙口社区居委会",
    "东方社区居委会",
    "新村社区居委会",
    "花园社区居委会",
    "翠苑社区居委会",
    "明珠社区居委会",
];
const CAUSES_OF_DEATH: &[&str] = &[
    "心脑血管疾病",
    "恶性肿瘤",
    "呼吸系统疾病",
    "意外伤害",
    "糖尿病及并发症",
    "消化系统疾病",
    "神经系统疾病",
    "感染性疾病",
    "衰老",
];
const DEATH_PLACES: &[&str] = &[
    "医疗卫生机构",
    "家中",
    "养老服务机构",
    "送医途中",
    "其他场所",
];
const UNIVERSITIES: &[&str] = &[
    "中山大学",
    "华南理工大学",
    "暨南大学",
    "华南师范大学",
    "深圳大学",
    "广东工业大学",
    "广州大学",
    "南方科技大学",
    "广东外语外贸大学",
    "广州医科大学",
    "华南农业大学",
    "南方医科大学",
    "广东财经大学",
    "深圳职业技术大学",
];
const MAJORS: &[&str] = &[
    "计算机科学与技术",
    "软件工程",
    "会计学",
    "临床医学",
    "法学",
    "汉语言文学",
    "英语",
    "土木工程",
    "电子信息工程",
    "市场营销",
    "机械设计制造及其自动化",
    "护理学",
    "金融学",
    "工商管理",
    "数学与应用数学",
    "国际经济与贸易",
];
const PROFESSIONAL_TITLES: &[(&str, &str)] = &[
    ("助理工程师", "技术员"),
    ("工程师", "工程师"),
    ("高级工程师", "高级工程师"),
    ("会计师", "财务主管"),
    ("高级会计师", "财务总监"),
    ("主治医师", "主治医师"),
    ("副主任医师", "副主任医师"),
    ("主管护师", "护士长"),
    ("一级教师", "教师"),
    ("高级教师", "教研组长"),
    ("经济师", "部门经理"),
    ("讲师", "讲师"),
    ("副教授", "副教授"),
];
const QUALIFICATIONS: &[(&str, &str)] = &[
    ("教师资格证书", ""),
    ("法律职业资格证书", "律师执业证"),
    ("注册会计师全科合格证书", "注册会计师证书"),
    ("医师资格证书", "医师执业证书"),
    ("护士执业资格考试合格证明", "护士执业证书"),
    ("一级建造师资格证书", "注册建造师执业证书"),
    ("二级建造师资格证书", "注册建造师执业证书"),
    ("企业人力资源管理师职业资格证书", ""),
    ("电工职业资格证书", ""),
    ("会计专业技术资格证书", ""),
];
const EXAM_RESULTS: &[&str] = &["学业水平考试合格", "学业水平考试良好", "学业水平考试优秀"];
const SKILLS: &[&str] = &[
    "篮球",
    "游泳",
    "钢琴",
    "书法",
    "舞蹈",
    "田径",
    "美术",
    "围棋",
    "足球",
    "小提琴",
];
const COMMUNITY_SERVICE: &[&str] = &[
    "参加社区志愿服务20小时",
    "参加社区志愿服务40小时",
    "参加社会实践活动3次",
    "参加环保公益活动",
];
const HEALTH_TESTS: &[&str] = &["体质健康测试合格", "体质健康测试良好", "体质健康测试优秀"];
const AWARDS: &[&str] = &[
    "市级三好学生",
    "区级优秀学生干部",
    "数学竞赛二等奖",
    "作文比赛一等奖",
    "科技创新大赛三等奖",
];
const AIDS: &[&str] = &["国家助学金", "免学费", "生活费补助"];
const LEAVING_REASONS: &[&str] = &["转学", "出国（境）", "随父母迁居", "因病"];
const DISABILITY_CANCEL: &[&str] = &["死亡", "户籍迁出", "残疾状况改善"];
#[rustfmt::skip]
const LICENCE_SCOPES: &[(&str, &str)] = &[
    ("食品生产许可：糕点、饮料", "糕点（烘烤类糕点）；饮料（蛋白饮料）"),
    ("食品生产许可：调味品", "调味品（酱油、食醋）"),
    ("工业产品生产许可：电线电缆", "电线电缆（额定电压450/750V及以下）"),
    ("工业产品生产许可：建筑用钢筋", "建筑用钢筋（热轧带肋钢筋）"),
    ("医疗器械生产许可", "第二类医疗器械：医用敷料"),
    ("化妆品生产许可", "一般液态单元；膏霜乳液单元"),
];
const GENERIC_TEXT: &[&str] = &["正常", "已核验", "无", "其他"];

/// A fixed 1×1 grey PNG: photos exist for a few persons without making the
/// lines heavy.
const PHOTO_PLACEHOLDER: &str =
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAAAAAA6fptVAAAACklEQVR4nGNoAAAAggCBd81ytgAAAABJRU5ErkJggg==";

// ---------------------------------------------------------------------------
// The key spaces.

/// Relative number of living people per five-year birth band, 1930–2024,
/// and the share (per mille) of each band recorded as deceased.
const BAND_WEIGHT: [u64; BANDS] = [
    80, 150, 250, 350, 500, 550, 700, 900, 950, 850, 1000, 1000, 1000, 950, 750, 700, 750, 700, 500,
];
const BAND_DEATHS: [u64; BANDS] = [
    450, 350, 160, 90, 55, 32, 16, 5, 5, 5, 4, 4, 3, 3, 2, 2, 2, 2, 2,
];
const REGION_WEIGHT_LOCAL: u64 = 1000;
const REGION_WEIGHT_OTHER: u64 = 350;
/// Men take sequence 2k+1 and women 2k+2, so at most 499 pairs per day.
const MAX_PAIRS_PER_DAY: u64 = 499;

/// A cell of the person key space: one birth band and one region, with
/// `cap` pair slots per day.
#[derive(Debug)]
struct Block {
    start: u64,
    band: usize,
    region: usize,
    cap: u64,
    days: u64,
    first_day: i32,
}

#[derive(Debug)]
struct Layout {
    blocks: Vec<Block>,
    pairs: u64,
}

/// How pair slots are laid out; independent of the seed, so built once.
fn layout() -> &'static Layout {
    static LAYOUT: OnceLock<Layout> = OnceLock::new();
    LAYOUT.get_or_init(|| {
        let mut blocks = Vec::new();
        let mut start = 0;
        for (band, &weight) in BAND_WEIGHT.iter().enumerate() {
            let y0 = FIRST_BIRTH_YEAR + band as i32 * BAND_YEARS;
            let first = ymd(y0, 1, 1).to_julian_day();
            let days = (ymd(y0 + BAND_YEARS, 1, 1).to_julian_day() - first) as u64;
            for region in 0..REGIONS.len() {
                let rw = if is_local(region) {
                    REGION_WEIGHT_LOCAL
                } else {
                    REGION_WEIGHT_OTHER
                };
                let cap = (MAX_PAIRS_PER_DAY * weight * rw / 1_000_000).max(1);
                blocks.push(Block {
                    start,
                    band,
                    region,
                    cap,
                    days,
                    first_day: first,
                });
                start += cap * days;
            }
        }
        Layout {
            blocks,
            pairs: start,
        }
    })
}

/// Organization codes: "MA"-style codes issued since the 2015 reform
/// (two letters and six characters of the credit-code alphabet), then the
/// older all-digit codes.
const NEW_CODES: u64 = 31u64.pow(6);
const OLD_CODES: u64 = 100_000_000;
const ENTITY_SPACE: u64 = NEW_CODES + OLD_CODES;
const CODE_ALPHABET: &[u8; 31] = b"0123456789ABCDEFGHJKLMNPQRTUWXY";

// ---------------------------------------------------------------------------
// Subjects.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    Normal,
    MovedOut { on: Date },
    Deceased { died: Date, cancelled: Date },
}

/// What is needed of a person to decide marriages and parenthood.
#[derive(Clone, Copy, Debug)]
struct Vital {
    birth_region: usize,
    birth: Date,
    sequence: u16,
    fate: Fate,
}

impl Vital {
    fn death(&self) -> Option<Date> {
        match self.fate {
            Fate::Deceased { died, .. } => Some(died),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Person {
    index: u64,
    key: PersonKey,
    birth: Date,
    male: bool,
    birth_region: usize,
    /// The Guangzhou or Shenzhen district of the household registration.
    home: usize,
    town: usize,
    surname: u8,
    given: [u8; 2],
    given_len: u8,
    ethnicity: &'static str,
    fate: Fate,
    photo: bool,
    /// Pair index of the parents (persons 2j and 2j+1).
    parents: Option<u64>,
}

impl Person {
    fn name_parts(&self) -> [&'static str; 3] {
        let g2 = if self.given_len == 2 {
            GIVEN[self.given[1] as usize]
        } else {
            ""
        };
        [
            SURNAMES[self.surname as usize],
            GIVEN[self.given[0] as usize],
            g2,
        ]
    }

    fn age(&self) -> i32 {
        age_at(self.birth, AS_OF)
    }

    fn alive(&self) -> bool {
        !matches!(self.fate, Fate::Deceased { .. })
    }

    fn death(&self) -> Option<Date> {
        match self.fate {
            Fate::Deceased { died, .. } => Some(died),
            _ => None,
        }
    }

    fn gender_code(&self) -> &'static str {
        self.key.gender().code()
    }

    fn vital(&self) -> Vital {
        Vital {
            birth_region: self.birth_region,
            birth: self.birth,
            sequence: self.key.sequence(),
            fate: self.fate,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EntityKind {
    Company,
    Individual,
    Cooperative,
    SocialGroup,
    PrivateNonEnterprise,
    Welfare,
    PublicInstitution,
}

impl EntityKind {
    /// GB 32100 registration authority and organization type.
    fn code_chars(self) -> (char, char) {
        match self {
            EntityKind::Company => ('9', '1'),
            EntityKind::Individual => ('9', '2'),
            EntityKind::Cooperative => ('9', '3'),
            EntityKind::SocialGroup => ('5', '1'),
            EntityKind::PrivateNonEnterprise => ('5', '2'),
            EntityKind::Welfare => ('5', '9'),
            EntityKind::PublicInstitution => ('1', '2'),
        }
    }

    fn is_market(self) -> bool {
        matches!(
            self,
            EntityKind::Company | EntityKind::Individual | EntityKind::Cooperative
        )
    }
}

#[derive(Clone, Copy, Debug)]
struct Entity {
    index: u64,
    key: EntityKey,
    kind: EntityKind,
    region: usize,
    town: usize,
    /// Registered before the 2015 reform: has a legacy registration number.
    legacy: bool,
    brand: [u8; 2],
    /// Index into the kind's word list (trade, shop, group word...).
    word: u8,
    /// Number in names like 第三中学 and in the kind's second choice.
    variant: u8,
    /// Market entity type code (`market_registration.type`).
    market_type: &'static str,
    status: &'static str,
    established: Date,
}

const MARKET_TYPES: &[(&str, u64)] = &[
    ("limited_liability", 760),
    ("joint_stock", 30),
    ("sole_proprietorship", 60),
    ("partnership", 30),
    ("branch", 60),
    ("foreign_invested", 30),
    ("state_owned", 10),
    ("collective", 10),
    ("other", 10),
];

fn weighted(rng: &mut Rng, table: &[(&'static str, u64)]) -> &'static str {
    let total: u64 = table.iter().map(|t| t.1).sum();
    let mut x = rng.below(total);
    for &(v, w) in table {
        if x < w {
            return v;
        }
        x -= w;
    }
    table[0].0
}

/// A marriage between persons 2j and 2j+1.
#[derive(Clone, Copy, Debug)]
struct Couple {
    married: Date,
    divorced: Option<Date>,
    /// `marital_status` of the man and of the woman.
    status: [&'static str; 2],
}

/// Everything the generator derives from the configuration, shared by all
/// records.
struct World {
    seed: u64,
    persons: u64,
    entities: u64,
    person_perm: Feistel,
    entity_perm: Feistel,
    layout: &'static Layout,
}

impl World {
    fn new(cfg: &GenConfig) -> World {
        let layout = layout();
        World {
            seed: cfg.seed,
            persons: cfg.persons,
            entities: cfg.entities,
            person_perm: Feistel::new(layout.pairs, cfg.seed, TAG_PERSON_PERM),
            entity_perm: Feistel::new(ENTITY_SPACE, cfg.seed, TAG_ENTITY_PERM),
            layout,
        }
    }

    fn person_capacity(&self) -> u64 {
        2 * self.layout.pairs
    }

    /// Region, birth date and sequence number of person `i`. Even persons
    /// are men, odd ones women; pair `j` (persons 2j and 2j+1) owns the
    /// slot `perm(j)` of the pair space, which the man takes as is and the
    /// woman through a shuffle that keeps her in the same birth band and
    /// region class. The shuffle is a bijection for fixed (band, slot), so
    /// women's keys are as unique as men's, and couples are of similar age.
    fn person_slot(&self, i: u64) -> (usize, Date, u16) {
        let pos = self.person_perm.permute(i / 2);
        let blocks = &self.layout.blocks;
        let b = &blocks[blocks.partition_point(|b| b.start <= pos) - 1];
        let off = pos - b.start;
        let (day, k) = (off / b.cap, off % b.cap);
        if i & 1 == 0 {
            return (b.region, jd(b.first_day + day as i32), (2 * k + 1) as u16);
        }
        let (lo, hi) = region_class(b.region);
        let shift = mix(self.seed
            ^ TAG_WIFE_REGION.wrapping_mul(0x1000_0000_01B3)
            ^ (k << 8)
            ^ b.band as u64)
            % (hi - lo) as u64;
        let region = lo + (b.region - lo + shift as usize) % (hi - lo);
        let day_shift = mix(self.seed
            ^ TAG_WIFE_DAY.wrapping_mul(0x1000_0000_01B3)
            ^ (k << 16)
            ^ ((b.region as u64) << 8)
            ^ b.band as u64)
            % b.days;
        let day = (day + day_shift) % b.days;
        (region, jd(b.first_day + day as i32), (2 * k + 2) as u16)
    }

    /// The facts of person `i` that others depend on: birth and fate.
    /// Returns the person's generator positioned after them.
    fn vital(&self, i: u64) -> (Vital, Rng) {
        let (birth_region, birth, sequence) = self.person_slot(i);
        let mut rng = Rng::new(self.seed, TAG_PERSON, i);
        let band = ((birth.year() - FIRST_BIRTH_YEAR) / BAND_YEARS) as usize;
        let x = rng.below(1000);
        let fate = if x < BAND_DEATHS[band] {
            let died = rng.date(add_days(birth, 1).max(date!(2000 - 01 - 01)), AS_OF);
            Fate::Deceased {
                died,
                cancelled: min_date(add_days(died, rng.below(31) as i64), AS_OF),
            }
        } else if x < BAND_DEATHS[band] + 30 {
            Fate::MovedOut {
                on: rng.date(add_days(birth, 1).max(date!(1990 - 01 - 01)), AS_OF),
            }
        } else {
            Fate::Normal
        };
        (
            Vital {
                birth_region,
                birth,
                sequence,
                fate,
            },
            rng,
        )
    }

    /// Person `i`'s surname and parents (the pair index of a generated
    /// couple). Persons born since birth certificates exist have parents
    /// when a fitting couple is found, and take the father's surname.
    fn lineage(&self, i: u64, v: &Vital, rng: &mut Rng) -> (u8, Option<u64>) {
        let own = rng.skewed(SURNAMES.len()) as u8;
        if v.birth < BIRTH_CERTIFICATES_FROM {
            return (own, None);
        }
        match self.find_parents(i, v.birth) {
            // Fathers are at least 22 years older, so this ends within a
            // few generations.
            Some(j) => {
                let (fv, mut frng) = self.vital(2 * j);
                (self.lineage(2 * j, &fv, &mut frng).0, Some(j))
            }
            None => (own, None),
        }
    }

    fn person(&self, i: u64) -> Person {
        let (v, mut rng) = self.vital(i);
        let key = PersonKey::from_parts(REGIONS[v.birth_region].code, v.birth, v.sequence)
            .expect("generated key parts are valid");
        let (surname, parents) = self.lineage(i, &v, &mut rng);
        let (birth_region, birth) = (v.birth_region, v.birth);
        let male = v.sequence % 2 == 1;
        let home = if is_local(birth_region) && !rng.chance(150) {
            birth_region
        } else {
            rng.index(LOCAL)
        };
        let town = rng.index(REGIONS[home].towns.len());
        let given_len = if rng.chance(if birth.year() < 1970 { 350 } else { 150 }) {
            1
        } else {
            2
        };
        let own = if male { GIVEN_MEN } else { GIVEN_WOMEN };
        let from = |rng: &mut Rng, (lo, hi): (usize, usize)| (lo + rng.index(hi - lo)) as u8;
        let g1 = if rng.chance(300) {
            from(&mut rng, GIVEN_EITHER)
        } else {
            from(&mut rng, own)
        };
        let g2 = if rng.chance(700) {
            from(&mut rng, own)
        } else {
            from(&mut rng, GIVEN_EITHER)
        };
        let ethnicity = if birth_region == GUANGXI && rng.chance(300) {
            "08"
        } else if rng.chance(950) {
            "01"
        } else {
            rng.pick(MINORITIES)
        };
        let photo = rng.chance(10);
        Person {
            index: i,
            key,
            birth,
            male,
            birth_region,
            home,
            town,
            surname,
            given: [g1, g2],
            given_len,
            ethnicity,
            fate: v.fate,
            photo,
            parents,
        }
    }

    /// Whether persons 2j and 2j+1 married, and how it stands.
    fn couple(&self, j: u64, man: &Vital, woman: &Vital) -> Option<Couple> {
        let mut rng = Rng::new(self.seed, TAG_COUPLE, j);
        let man_age = age_at(man.birth, AS_OF);
        if man_age < 22 || age_at(woman.birth, AS_OF) < 20 {
            return None;
        }
        let per_mille = match man_age {
            ..30 => 350,
            30..40 => 750,
            _ => 880,
        };
        if !rng.chance(per_mille) {
            return None;
        }
        let lo = add_years(man.birth, 22).max(add_years(woman.birth, 20));
        let mut hi = AS_OF;
        for d in [man.death(), woman.death()].into_iter().flatten() {
            hi = hi.min(d);
        }
        if hi < lo {
            return None;
        }
        let married = rng.date(lo, min_date(hi, add_years(lo, 15)));
        let (divorced, status) = match (man.death().is_none(), woman.death().is_none()) {
            (false, false) => (None, ["20", "20"]),
            (false, true) => (None, ["20", "30"]),
            (true, false) => (None, ["30", "20"]),
            (true, true) => {
                let x = rng.below(1000);
                if x < 80 && married < AS_OF {
                    (Some(rng.date(add_days(married, 1), AS_OF)), ["40", "40"])
                } else if x < 600 {
                    (None, ["20", "20"])
                } else {
                    let one = |rng: &mut Rng| if rng.chance(850) { "21" } else { "22" };
                    (None, [one(&mut rng), one(&mut rng)])
                }
            }
        };
        Some(Couple {
            married,
            divorced,
            status,
        })
    }

    /// A generated couple who could be the parents of person `i`, born on
    /// `birth`: married before it and not yet divorced, of child-bearing
    /// age and alive. Random probes over the generated pairs.
    fn find_parents(&self, i: u64, birth: Date) -> Option<u64> {
        let pairs = self.persons / 2;
        if pairs == 0 {
            return None;
        }
        let mut rng = Rng::new(self.seed, TAG_PARENTS, i);
        for _ in 0..PARENT_PROBES {
            let j = rng.below(pairs);
            if 2 * j == i || 2 * j + 1 == i {
                continue;
            }
            let (man, _) = self.vital(2 * j);
            if !(22..=50).contains(&age_at(man.birth, birth))
                || man.death().is_some_and(|d| d < birth)
            {
                continue;
            }
            let (woman, _) = self.vital(2 * j + 1);
            if !(20..=45).contains(&age_at(woman.birth, birth))
                || woman.death().is_some_and(|d| d < birth)
            {
                continue;
            }
            if let Some(c) = self.couple(j, &man, &woman) {
                if c.married <= birth && c.divorced.is_none_or(|d| d > birth) {
                    return Some(j);
                }
            }
        }
        None
    }

    fn entity(&self, i: u64) -> Entity {
        let mut rng = Rng::new(self.seed, TAG_ENTITY, i);
        let x = rng.below(1000);
        let kind = match x {
            0..785 => EntityKind::Company,
            785..925 => EntityKind::Individual,
            925..935 => EntityKind::Cooperative,
            935..955 => EntityKind::SocialGroup,
            955..980 => EntityKind::PrivateNonEnterprise,
            980..985 => EntityKind::Welfare,
            _ => EntityKind::PublicInstitution,
        };
        // Central districts hold more organizations than outer ones.
        let region = if rng.chance(400) {
            rng.pick(&[3usize, 1, 12, 13, 15, 14])
        } else {
            rng.index(LOCAL)
        };
        let town = rng.index(REGIONS[region].towns.len());
        let q = self.entity_perm.permute(i);
        let legacy = q >= NEW_CODES;
        let mut body = [b'0'; 8];
        if legacy {
            let mut n = q - NEW_CODES;
            for slot in body.iter_mut().rev() {
                *slot = b'0' + (n % 10) as u8;
                n /= 10;
            }
        } else {
            body[..2].copy_from_slice(match kind.code_chars().0 {
                '9' => b"MA",
                '5' => b"MJ",
                _ => b"MB",
            });
            let mut n = q;
            for slot in body[2..].iter_mut().rev() {
                *slot = CODE_ALPHABET[(n % 31) as usize];
                n /= 31;
            }
        }
        let (authority, org_type) = kind.code_chars();
        let body = std::str::from_utf8(&body).expect("ASCII");
        let key = EntityKey::from_parts(authority, org_type, REGIONS[region].code, body)
            .expect("generated credit code parts are valid");
        let brand = [
            rng.index(BRAND_A.len()) as u8,
            rng.index(BRAND_B.len()) as u8,
        ];
        let words = match kind {
            EntityKind::Company => TRADES.len(),
            EntityKind::Individual => SHOPS.len(),
            EntityKind::Cooperative => COOP_WORDS.len(),
            EntityKind::SocialGroup => GROUP_WORDS.len(),
            EntityKind::PrivateNonEnterprise => PNE_WORDS.len(),
            EntityKind::Welfare => 4,
            EntityKind::PublicInstitution => PUBLIC_WORDS.len() + 2,
        };
        let word = rng.index(words) as u8;
        let variant = rng.below(20) as u8;
        let market_type = match kind {
            EntityKind::Company => weighted(&mut rng, MARKET_TYPES),
            EntityKind::Cooperative => "farmer_cooperative",
            _ => "other",
        };
        let status = weighted(
            &mut rng,
            &[
                ("active", 860),
                ("cancelled", 80),
                ("revoked", 40),
                ("moved_out", 20),
            ],
        );
        let established = if legacy {
            rng.date(date!(1985 - 01 - 01), date!(2015 - 09 - 30))
        } else {
            rng.date(date!(2015 - 10 - 01), AS_OF)
        };
        Entity {
            index: i,
            key,
            kind,
            region,
            town,
            legacy,
            brand,
            word,
            variant,
            market_type,
            status,
            established,
        }
    }

    /// A generated person for a role that needs an adult (legal
    /// representative, operator): random probes until one was 18 on `by`
    /// and still has a normal registration. `None` without persons.
    fn pick_adult(&self, rng: &mut Rng, by: Date) -> Option<Person> {
        if self.persons == 0 {
            return None;
        }
        let mut last = None;
        for _ in 0..48 {
            let p = self.person(rng.below(self.persons));
            if add_years(p.birth, 18) <= by && p.fate == Fate::Normal {
                return Some(p);
            }
            last = Some(p);
        }
        last
    }

    /// An employer for person records: a generated company or public
    /// institution, `None` when there are no entities.
    fn pick_employer(&self, rng: &mut Rng) -> Option<Entity> {
        if self.entities == 0 {
            return None;
        }
        let mut last = None;
        for _ in 0..8 {
            let e = self.entity(rng.below(self.entities));
            if matches!(e.kind, EntityKind::Company | EntityKind::PublicInstitution) {
                return Some(e);
            }
            last = Some(e);
        }
        last
    }
}

// ---------------------------------------------------------------------------
// Datasets: what records each one holds and where each field's value comes
// from. The built-in datasets are known by id; any other dataset (from an
// operator's catalog) is filled from its field types for a share of the
// subjects.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Hukou,
    ResidencePermit,
    Marriage,
    Adoption,
    Birth,
    Death,
    FamilyPlanning,
    SocialInsurance,
    ProfessionalTitle,
    MinimumLiving,
    Education,
    Disability,
    HousingFund,
    Qualification,
    OtherPerson,
    MarketRegistration,
    IndividualBusiness,
    QualityLicence,
    TaxRegistration,
    PrivateNonEnterprise,
    SocialGroup,
    Welfare,
    PublicInstitution,
    OtherEntity,
}

impl Kind {
    fn of(ds: &Dataset) -> Kind {
        let k = match ds.id.as_str() {
            "hukou" => Kind::Hukou,
            "residence_permit" => Kind::ResidencePermit,
            "marriage" => Kind::Marriage,
            "adoption" => Kind::Adoption,
            "birth" => Kind::Birth,
            "death" => Kind::Death,
            "family_planning" => Kind::FamilyPlanning,
            "social_insurance" => Kind::SocialInsurance,
            "professional_title" => Kind::ProfessionalTitle,
            "minimum_living_allowance" => Kind::MinimumLiving,
            "education" => Kind::Education,
            "disability" => Kind::Disability,
            "housing_fund" => Kind::HousingFund,
            "professional_qualification" => Kind::Qualification,
            "market_registration" => Kind::MarketRegistration,
            "individual_business" => Kind::IndividualBusiness,
            "quality_licence" => Kind::QualityLicence,
            "tax_registration" => Kind::TaxRegistration,
            "private_non_enterprise" => Kind::PrivateNonEnterprise,
            "social_group" => Kind::SocialGroup,
            "welfare_institution" => Kind::Welfare,
            "public_institution" => Kind::PublicInstitution,
            _ => Kind::OtherPerson,
        };
        // A custom catalog may reuse an id for the other subject.
        match (ds.subject, k.subject()) {
            (Subject::Person, Subject::Person) => k,
            (Subject::Person, Subject::Entity) => Kind::OtherPerson,
            (Subject::Entity, Subject::Entity) => k,
            (Subject::Entity, Subject::Person) => Kind::OtherEntity,
        }
    }

    fn subject(self) -> Subject {
        match self {
            Kind::MarketRegistration
            | Kind::IndividualBusiness
            | Kind::QualityLicence
            | Kind::TaxRegistration
            | Kind::PrivateNonEnterprise
            | Kind::SocialGroup
            | Kind::Welfare
            | Kind::PublicInstitution
            | Kind::OtherEntity => Subject::Entity,
            _ => Subject::Person,
        }
    }

    /// The department whose offices appear as issuing authority.
    fn agency(self) -> Agency {
        match self {
            Kind::Hukou | Kind::ResidencePermit => Agency::Police,
            Kind::Marriage | Kind::Adoption | Kind::MinimumLiving => Agency::CivilAffairs,
            Kind::PrivateNonEnterprise | Kind::SocialGroup | Kind::Welfare => Agency::CivilAffairs,
            Kind::Birth | Kind::Death | Kind::FamilyPlanning => Agency::Health,
            Kind::SocialInsurance | Kind::ProfessionalTitle | Kind::Qualification => {
                Agency::HumanResources
            }
            Kind::Education => Agency::Education,
            Kind::Disability => Agency::DisabledFederation,
            Kind::HousingFund => Agency::HousingFund,
            Kind::MarketRegistration | Kind::IndividualBusiness | Kind::QualityLicence => {
                Agency::Market
            }
            Kind::TaxRegistration => Agency::Tax,
            Kind::PublicInstitution => Agency::Establishment,
            Kind::OtherPerson | Kind::OtherEntity => Agency::Government,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Agency {
    Police,
    CivilAffairs,
    Health,
    HumanResources,
    Education,
    DisabledFederation,
    HousingFund,
    Market,
    Tax,
    Establishment,
    Government,
}

/// Where a field's value comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Src {
    Name,
    Gender,
    Ethnicity,
    BirthDate,
    /// Age on the record's date.
    Age,
    Photo,
    /// The registration's town (街道) and police station.
    Town,
    Station,
    /// The registration district, as a name.
    AreaName,
    AreaCode,
    ProvinceName,
    CityName,
    CountyName,
    Community,
    HomeAddress,
    /// A person's household address elsewhere (residence permits).
    OriginAddress,
    Authority,
    AuthorityArea,
    /// 属地管理机关: the local office of the market regulator.
    LocalAuthority,
    SupervisingUnit,
    Start,
    End,
    /// A date of the record's `extra` list.
    Extra(usize),
    Established,
    ValidUntil,
    /// The record's main and secondary codes.
    Code,
    Code2,
    RelName,
    RelKey,
    Rel2Name,
    Rel2Key,
    RelAddress,
    /// Family member named on a death record.
    FamilyName,
    AnyName,
    Phone,
    Hospital,
    Doc(Doc),
    Text(&'static [&'static str]),
    /// The record's `pick` into a list of pairs, first or second member.
    Pair(&'static [(&'static str, &'static str)], bool),
    Const(&'static str),
    OrgName,
    OrgArea,
    OrgSocialSecurityNo,
    School,
    SchoolAddress,
    Major,
    Degree,
    EntityName,
    EntityAddress,
    EntityKeyText,
    Industry,
    Scope,
    Capital,
    Generic,
}

/// Formats of document numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Doc {
    /// Prefix, area code, year of the record, then digits.
    AreaYear(&'static str, usize),
    /// Prefix, area code, digits, suffix.
    Certificate(&'static str, usize, &'static str),
    /// Prefix then digits.
    Digits(&'static str, usize),
    /// 全国学籍号: G and the citizen ID number.
    StudentNo,
    /// 残疾人证号: the citizen ID number, category and grade.
    DisabilityCard,
    /// 营业执照注册号 of an organization registered before 2015.
    RegistrationNo,
}

struct FieldPlan<'c> {
    field: &'c Field,
    src: Src,
    when: When,
}

/// Which records of a dataset have a value for an optional field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum When {
    Always,
    /// Records that were closed (cancelled, stopped, divorced).
    Closed,
    /// Records with that date of their `extra` list.
    Extra(usize),
    /// Education records of graduates with a degree.
    Degree,
    /// Qualifications that lead to a practising certificate.
    Practice,
    Sometimes(u64),
}

fn when(kind: Kind, n: &str) -> When {
    match (kind, n) {
        (Kind::Education, "graduated_on" | "graduated_school" | "diploma_no") => When::Extra(0),
        (Kind::Education, "transferred_on" | "transferred_from" | "transferred_to") => {
            When::Extra(1)
        }
        (Kind::Education, "suspended_on") => When::Extra(2),
        (Kind::Education, "resumed_on") => When::Extra(3),
        (Kind::Education, "withdrawn_on" | "leaving_reason") => When::Extra(4),
        (Kind::Education, "left_on") => When::Extra(5),
        (Kind::Education, n) if n.starts_with("degree") => When::Degree,
        (Kind::Education, "exam_results") => When::Sometimes(800),
        (Kind::Education, "community_service") => When::Sometimes(500),
        (Kind::Education, "sports_arts_skills") => When::Sometimes(400),
        (Kind::Education, "awards") => When::Sometimes(250),
        (Kind::Education, "financial_aid") => When::Sometimes(100),
        (Kind::FamilyPlanning, "migrant_certificate_no") => When::Sometimes(200),
        (Kind::Qualification, "practice_certificate_name" | "practice_certificate_no") => {
            When::Practice
        }
        (Kind::Death, "family_member_phone" | "family_member_address") => When::Sometimes(900),
        _ if n.starts_with("cancel") || n.starts_with("stopped") || n.starts_with("divorce") => {
            When::Closed
        }
        _ => When::Always,
    }
}

struct Plan<'c> {
    ds: &'c Dataset,
    kind: Kind,
    tag: u64,
    fields: Vec<FieldPlan<'c>>,
    /// Some field names a related person.
    has_rel: bool,
}

impl<'c> Plan<'c> {
    fn new(ds: &'c Dataset) -> Plan<'c> {
        let kind = Kind::of(ds);
        let fields: Vec<FieldPlan> = ds
            .fields
            .iter()
            .map(|field| FieldPlan {
                field,
                src: resolve(kind, field),
                when: when(kind, &field.name),
            })
            .collect();
        let has_rel = fields
            .iter()
            .any(|f| matches!(f.src, Src::RelKey | Src::RelName));
        Plan {
            ds,
            kind,
            tag: tag(&ds.id),
            fields,
            has_rel,
        }
    }
}

fn resolve(kind: Kind, f: &Field) -> Src {
    use FieldType as T;
    use Kind as K;
    let n = f.name.as_str();
    let specific = match (kind, n) {
        (K::Hukou, "registered_town") => Some(Src::Town),
        (K::Hukou, "registered_police_station" | "cancel_police_station") => Some(Src::Station),
        (K::Hukou, "cancel_area") => Some(Src::AreaName),
        (K::Hukou, "status") => Some(Src::Code),
        (K::Hukou, "cancel_reason") => Some(Src::Code2),
        (K::ResidencePermit, "household_address") => Some(Src::OriginAddress),
        (K::ResidencePermit, "permit_no") => Some(Src::Doc(Doc::AreaYear("", 8))),
        (K::ResidencePermit, "residence_county") => Some(Src::AreaName),
        (K::ResidencePermit, "residence_town") => Some(Src::Town),
        (K::ResidencePermit, "residence_community") => Some(Src::Community),
        (K::ResidencePermit, "residence_police_station") => Some(Src::Station),
        (K::Marriage, "marital_status") | (K::Adoption, "role") => Some(Src::Code),
        (K::Marriage, "marriage_date") => Some(Src::Start),
        (K::Marriage, "divorce_date") => Some(Src::End),
        (K::Adoption, "adoption_certificate_no") => Some(Src::Doc(Doc::AreaYear("", 5))),
        (K::Birth, "birth_certificate_no") => Some(Src::Doc(Doc::Digits("O", 9))),
        (K::Birth, "health_status") => Some(Src::Code),
        (K::Birth, "mother_name") => Some(Src::Rel2Name),
        (K::Birth, "mother_id") => Some(Src::Rel2Key),
        (K::Birth, "father_name") => Some(Src::RelName),
        (K::Birth, "father_id") => Some(Src::RelKey),
        (K::Birth, "issuing_institution") | (K::Death, "medical_institution") => {
            Some(Src::Hospital)
        }
        (K::Death, "death_certificate_no") => Some(Src::Doc(Doc::AreaYear("", 6))),
        (K::Death, "nationality") => Some(Src::Const("中国")),
        (K::Death, "death_date") => Some(Src::Start),
        (K::Death, "death_place") => Some(Src::Text(DEATH_PLACES)),
        (K::Death, "cause_of_death") => Some(Src::Text(CAUSES_OF_DEATH)),
        (K::Death, "family_member_name") => Some(Src::FamilyName),
        (K::Death, "family_member_address") => Some(Src::RelAddress),
        (K::Death, "physician_signature" | "police_officer_signature") => Some(Src::AnyName),
        (K::Death, "police_station") => Some(Src::Station),
        (K::FamilyPlanning, "service_certificate_no") => Some(Src::Doc(Doc::AreaYear("", 6))),
        (K::FamilyPlanning, "migrant_certificate_no") => Some(Src::Doc(Doc::AreaYear("L", 6))),
        (K::SocialInsurance, "insured_status") => Some(Src::Code),
        (K::SocialInsurance, "insurance_type") => Some(Src::Code2),
        (K::SocialInsurance, "social_security_no") => Some(Src::Doc(Doc::Digits("", 10))),
        (K::SocialInsurance, "insured_on") => Some(Src::Start),
        (K::SocialInsurance, "employer_social_security_no") => Some(Src::OrgSocialSecurityNo),
        (K::ProfessionalTitle, "professional_title") => Some(Src::Pair(PROFESSIONAL_TITLES, false)),
        (K::ProfessionalTitle, "appointed_post") => Some(Src::Pair(PROFESSIONAL_TITLES, true)),
        (K::ProfessionalTitle, "title_obtained_on") => Some(Src::Start),
        (K::ProfessionalTitle, "appointed_on") => Some(Src::Extra(0)),
        (K::ProfessionalTitle, "appointing_unit") => Some(Src::OrgName),
        (K::ProfessionalTitle, "appointing_unit_area") => Some(Src::OrgArea),
        (K::MinimumLiving, "allowance_certificate_no") => Some(Src::Doc(Doc::AreaYear("", 6))),
        (K::Education, n) => match n {
            "student_no" => Some(Src::Doc(Doc::StudentNo)),
            "birth_place" => Some(Src::OriginAddress),
            "household_place" => Some(Src::AreaName),
            "enrolled_on" => Some(Src::Start),
            "school" | "graduated_school" | "degree_awarding_unit" => Some(Src::School),
            "school_address" => Some(Src::SchoolAddress),
            "exam_results" => Some(Src::Text(EXAM_RESULTS)),
            "sports_arts_skills" => Some(Src::Text(SKILLS)),
            "community_service" => Some(Src::Text(COMMUNITY_SERVICE)),
            "physical_health" => Some(Src::Text(HEALTH_TESTS)),
            "vaccination" => Some(Src::Const("按国家免疫规划程序完成接种")),
            "awards" => Some(Src::Text(AWARDS)),
            "financial_aid" => Some(Src::Text(AIDS)),
            "graduated_on" | "degree_awarded_on" => Some(Src::Extra(0)),
            "transferred_on" => Some(Src::Extra(1)),
            "transferred_from" => Some(Src::School),
            "transferred_to" => Some(Src::School),
            "suspended_on" => Some(Src::Extra(2)),
            "resumed_on" => Some(Src::Extra(3)),
            "withdrawn_on" => Some(Src::Extra(4)),
            "left_on" => Some(Src::Extra(5)),
            "leaving_reason" => Some(Src::Text(LEAVING_REASONS)),
            "education_level" => Some(Src::Code),
            "degree" => Some(Src::Degree),
            "major" => Some(Src::Major),
            "diploma_no" => Some(Src::Doc(Doc::Digits("1", 17))),
            "degree_certificate_no" => Some(Src::Doc(Doc::Digits("1", 15))),
            _ => None,
        },
        (K::Disability, "disability_card_no") => Some(Src::Doc(Doc::DisabilityCard)),
        (K::Disability, "cancel_reason") => Some(Src::Text(DISABILITY_CANCEL)),
        (K::HousingFund, "account_status") => Some(Src::Code),
        (K::Qualification, "qualification_certificate_name") => {
            Some(Src::Pair(QUALIFICATIONS, false))
        }
        (K::Qualification, "practice_certificate_name") => Some(Src::Pair(QUALIFICATIONS, true)),
        (K::Qualification, "qualification_certificate_no") => Some(Src::Doc(Doc::AreaYear("", 6))),
        (K::Qualification, "practice_certificate_no") => Some(Src::Doc(Doc::AreaYear("P", 6))),
        (K::MarketRegistration | K::IndividualBusiness, "type") => Some(Src::Code),
        (K::MarketRegistration | K::IndividualBusiness, "status") => Some(Src::Code2),
        (K::MarketRegistration | K::IndividualBusiness, "registration_no") => {
            Some(Src::Doc(Doc::RegistrationNo))
        }
        (K::IndividualBusiness, "operator_name") => Some(Src::RelName),
        (K::IndividualBusiness, "operator_id") => Some(Src::RelKey),
        (K::QualityLicence, "approval_no") => Some(Src::Doc(Doc::AreaYear("粤", 5))),
        (K::QualityLicence, "licence_no") => Some(Src::Doc(Doc::Digits("SC1", 13))),
        (K::QualityLicence, "approved_content") => Some(Src::Pair(LICENCE_SCOPES, false)),
        (K::QualityLicence, "licence_scope") => Some(Src::Pair(LICENCE_SCOPES, true)),
        (K::QualityLicence, "inspection_date") => Some(Src::Extra(0)),
        (K::QualityLicence, "valid_until") => Some(Src::ValidUntil),
        (K::TaxRegistration, "taxpayer_id") => Some(Src::EntityKeyText),
        (K::TaxRegistration, "tax_authority") => Some(Src::Authority),
        (K::TaxRegistration, "registered_address") => Some(Src::EntityAddress),
        (K::PrivateNonEnterprise, "unit_type")
        | (K::SocialGroup, "group_type")
        | (K::Welfare, "institution_type") => Some(Src::Code),
        (K::SocialGroup | K::Welfare, "certificate_no") => Some(Src::Doc(Doc::AreaYear("", 4))),
        (K::PublicInstitution, "certificate_no") => {
            Some(Src::Doc(Doc::Certificate("事证第1", 6, "号")))
        }
        (
            K::PrivateNonEnterprise | K::SocialGroup | K::Welfare | K::PublicInstitution,
            "registration_date",
        ) => Some(Src::Established),
        _ => None,
    };
    if let Some(src) = specific {
        return src;
    }
    let entity = kind.subject() == Subject::Entity;
    match (n, f.ty) {
        ("name", T::String) if entity => Src::EntityName,
        ("name", T::String) => Src::Name,
        ("gender", T::Code) => Src::Gender,
        ("ethnicity", T::Code) => Src::Ethnicity,
        ("birth_date", T::Date) => Src::BirthDate,
        ("age", T::Integer) => Src::Age,
        ("photo", T::Bytes) => Src::Photo,
        ("area_code", T::String) => Src::AreaCode,
        ("area_name", T::String) => Src::AreaName,
        ("province_name", T::String) => Src::ProvinceName,
        ("city_name", T::String) => Src::CityName,
        ("county_name", T::String) => Src::CountyName,
        ("address" | "business_address", T::String) if entity => Src::EntityAddress,
        ("residence_address" | "household_address" | "address", T::String) => Src::HomeAddress,
        ("phone" | "family_member_phone", T::String) => Src::Phone,
        ("employer_name", T::String) => Src::OrgName,
        ("local_authority", T::String) => Src::LocalAuthority,
        ("supervising_unit", T::String) => Src::SupervisingUnit,
        ("industry", T::Code) => Src::Industry,
        ("business_scope", T::String) => Src::Scope,
        ("registered_capital", T::Decimal) => Src::Capital,
        ("established_on", T::Date) => Src::Established,
        ("legal_representative" | "spouse_name", T::String) => Src::RelName,
        (_, T::PersonKey) => Src::RelKey,
        (n, T::String) if n.ends_with("_authority") || n == "issuing_institution" => Src::Authority,
        (n, T::String) if n.ends_with("_authority_area") || n.ends_with("_area") => {
            Src::AuthorityArea
        }
        (n, T::Date)
            if n.starts_with("cancel") || n.starts_with("stopped") || n.starts_with("divorce") =>
        {
            Src::End
        }
        (_, T::Date) => Src::Start,
        ("status", T::Code) => Src::Code,
        _ => Src::Generic,
    }
}

/// One record of a dataset, before its fields are written.
struct Rec {
    rng: Rng,
    version: u64,
    /// The district whose offices keep the record.
    region: usize,
    start: Date,
    end: Option<Date>,
    extra: [Option<Date>; 6],
    code: &'static str,
    code2: &'static str,
    /// Related persons: spouse, father, legal representative, operator...
    rel: Option<Person>,
    /// ...and mother.
    rel2: Option<Person>,
    /// Employer or appointing unit.
    org: Option<Entity>,
    /// Index into the dataset's list of pairs, schools, majors.
    pick: usize,
}

impl Rec {
    fn new(mut rng: Rng, region: usize, start: Date) -> Rec {
        let version = 1 + rng.below(3);
        Rec {
            rng,
            version,
            region,
            start,
            end: None,
            extra: [None; 6],
            code: "",
            code2: "",
            rel: None,
            rel2: None,
            org: None,
            pick: 0,
        }
    }
}

#[derive(Clone, Copy)]
enum Subj<'a> {
    P(&'a Person),
    E(&'a Entity),
}

impl World {
    /// The record of person `p` in the plan's dataset, if it holds one.
    fn person_rec(
        &self,
        plan: &Plan,
        p: &Person,
        spouse: Option<(&Person, &Couple)>,
    ) -> Option<Rec> {
        let mut rng = Rng::new(self.seed, plan.tag, p.index);
        let age = p.age();
        let adult_from = add_years(p.birth, 18);
        let alive = p.alive();
        let mut rec = match plan.kind {
            Kind::Hukou => {
                let mut r = Rec::new(rng, p.home, p.birth);
                match p.fate {
                    Fate::Normal => r.code = "normal",
                    Fate::MovedOut { on } => {
                        (r.code, r.code2, r.end) = ("cancelled", "moved_out", Some(on));
                    }
                    Fate::Deceased { cancelled, .. } => {
                        (r.code, r.code2, r.end) = ("cancelled", "deceased", Some(cancelled));
                    }
                }
                r
            }
            Kind::ResidencePermit => {
                let Fate::MovedOut { on } = p.fate else {
                    return None;
                };
                if age < 16 || !rng.chance(700) {
                    return None;
                }
                let start = rng.date(add_days(on, 30).max(add_years(p.birth, 16)), AS_OF);
                let mut r = Rec::new(rng, p.home, start);
                if r.rng.chance(100) {
                    r.end = Some(r.rng.date(start, AS_OF));
                }
                r
            }
            Kind::Marriage => {
                let (other, c) = spouse?;
                let mut r = Rec::new(rng, if p.male { p.home } else { other.home }, c.married);
                r.code = c.status[usize::from(!p.male)];
                r.end = c.divorced;
                r.rel = Some(*other);
                r
            }
            Kind::Adoption => {
                if !rng.chance(3) {
                    return None;
                }
                let (code, start) = if age < 18 {
                    ("adoptee", rng.date(p.birth, AS_OF))
                } else if rng.chance(900) {
                    ("adopter", rng.date(add_years(p.birth, 28), AS_OF))
                } else {
                    ("placer", rng.date(add_years(p.birth, 20), AS_OF))
                };
                let mut r = Rec::new(rng, p.home, start);
                r.code = code;
                r
            }
            Kind::Birth => {
                if p.birth < BIRTH_CERTIFICATES_FROM || !rng.chance(970) {
                    return None;
                }
                let issued = min_date(add_days(p.birth, rng.below(4) as i64), AS_OF);
                let mut r = Rec::new(rng, p.birth_region, issued);
                r.code = if r.rng.chance(950) { "1" } else { "2" };
                if let Some(j) = p.parents {
                    r.rel = Some(self.person(2 * j));
                    r.rel2 = Some(self.person(2 * j + 1));
                }
                r
            }
            Kind::Death => {
                let died = p.death()?;
                let mut r = Rec::new(rng, p.home, died);
                r.rel = spouse
                    .map(|(s, _)| *s)
                    .filter(|s| s.death().is_none_or(|d| d > died));
                r
            }
            Kind::FamilyPlanning => {
                let (_, c) = spouse?;
                let status = c.status[usize::from(!p.male)];
                if !(20..=49).contains(&age)
                    || !alive
                    || !matches!(status, "20" | "21" | "22")
                    || !rng.chance(400)
                {
                    return None;
                }
                let start = rng.date(c.married, min_date(add_years(c.married, 1), AS_OF));
                Rec::new(rng, p.home, start)
            }
            Kind::SocialInsurance => {
                if age < 18 || !rng.chance(600) {
                    return None;
                }
                let from = adult_from.max(date!(1995 - 01 - 01));
                let start = rng.date(from, min_date(add_years(from, 12), AS_OF));
                let mut r = Rec::new(rng, p.home, start);
                r.code2 = weighted(
                    &mut r.rng,
                    &[
                        ("110", 700),
                        ("120", 80),
                        ("170", 100),
                        ("310", 60),
                        ("390", 60),
                    ],
                );
                match p.fate {
                    Fate::Deceased { died, .. } => (r.code, r.end) = ("3", Some(died.max(start))),
                    Fate::MovedOut { on } => (r.code, r.end) = ("3", Some(on.max(start))),
                    Fate::Normal if r.rng.chance(80) => {
                        (r.code, r.end) = ("2", Some(r.rng.date(start, AS_OF)))
                    }
                    Fate::Normal => r.code = "1",
                }
                if r.code2 != "170" && r.code2 != "390" {
                    r.org = self.pick_employer(&mut r.rng);
                }
                r
            }
            Kind::ProfessionalTitle => {
                if age < 25 || !rng.chance(80) {
                    return None;
                }
                let start = rng.date(add_years(p.birth, 24), AS_OF);
                let mut r = Rec::new(rng, p.home, start);
                r.pick = r.rng.index(PROFESSIONAL_TITLES.len());
                r.extra[0] = Some(r.rng.date(start, min_date(add_days(start, 365), AS_OF)));
                r.org = self.pick_employer(&mut r.rng);
                r
            }
            Kind::MinimumLiving => {
                if !alive || !rng.chance(15) {
                    return None;
                }
                let start = rng.date(p.birth.max(date!(2000 - 01 - 01)), AS_OF);
                Rec::new(rng, p.home, start)
            }
            Kind::Education => self.education_rec(rng, p)?,
            Kind::Disability => {
                if !rng.chance(20) {
                    return None;
                }
                let start = rng.date(p.birth.max(date!(1990 - 01 - 01)), AS_OF);
                let mut r = Rec::new(rng, p.home, start);
                r.end = match p.fate {
                    Fate::Deceased { cancelled, .. } => Some(cancelled.max(start)),
                    Fate::MovedOut { on } => Some(on.max(start)),
                    Fate::Normal => None,
                };
                r
            }
            Kind::HousingFund => {
                if !(18..=65).contains(&age) || !rng.chance(450) {
                    return None;
                }
                let from = adult_from.max(date!(1999 - 01 - 01));
                let start = rng.date(from, min_date(add_years(from, 10), AS_OF));
                let mut r = Rec::new(rng, p.home, start);
                r.code = if !matches!(p.fate, Fate::Normal) {
                    "closed"
                } else {
                    weighted(
                        &mut r.rng,
                        &[("normal", 850), ("sealed", 130), ("frozen", 20)],
                    )
                };
                r.org = self.pick_employer(&mut r.rng);
                r
            }
            Kind::Qualification => {
                if age < 22 || !rng.chance(100) {
                    return None;
                }
                let start = rng.date(add_years(p.birth, 22), AS_OF);
                let mut r = Rec::new(rng, p.home, start);
                r.pick = r.rng.index(QUALIFICATIONS.len());
                if !alive && r.rng.chance(500) {
                    r.end = p.death().map(|d| d.max(start));
                }
                r
            }
            Kind::OtherPerson => {
                if !rng.chance(300) {
                    return None;
                }
                let from = if age >= 18 { adult_from } else { p.birth };
                let start = rng.date(from, AS_OF);
                let mut r = Rec::new(rng, p.home, start);
                if r.rng.chance(50) {
                    r.end = Some(r.rng.date(start, AS_OF));
                }
                r
            }
            _ => return None,
        };
        if rec.rel.is_none() && plan.kind == Kind::OtherPerson && plan.has_rel {
            // A person reference without a known relation (custom catalogs).
            if self.persons > 0 {
                rec.rel = Some(self.person(rec.rng.below(self.persons)));
            }
        }
        Some(rec)
    }

    fn education_rec(&self, mut rng: Rng, p: &Person) -> Option<Rec> {
        let age = p.age();
        if !(6..=45).contains(&age) || !p.alive() || !rng.chance(550) {
            return None;
        }
        // School year starts on 1 September.
        let sept = |y: i32| ymd(y, 9, 1);
        let july = |y: i32| ymd(y, 7, 1);
        let by = p.birth.year();
        let (code, years, start_age) = if age <= 18 {
            ("", 0, if age < 12 { 6 } else { 12 })
        } else {
            match rng.below(1000) {
                0..60 => ("10", 7, 18),
                60..360 => ("20", 4, 18),
                360..600 => ("30", 3, 18),
                600..700 => ("40", 3, 15),
                700..850 => ("60", 3, 15),
                _ => ("70", 3, 12),
            }
        };
        let enrolled = min_date(sept(by + start_age), AS_OF);
        let mut r = Rec::new(rng, p.home, enrolled);
        r.code = code;
        r.pick = r.rng.index(UNIVERSITIES.len().max(MAJORS.len()));
        if !code.is_empty() {
            let graduated = min_date(july(by + start_age + years), AS_OF);
            r.extra[0] = Some(graduated);
            r.extra[5] = Some(graduated);
        }
        let until = r.extra[0].unwrap_or(AS_OF);
        if r.rng.chance(30) {
            r.extra[1] = Some(r.rng.date(enrolled, until));
        }
        if r.rng.chance(10) {
            let s = r.rng.date(enrolled, until);
            r.extra[2] = Some(s);
            r.extra[3] = Some(min_date(add_days(s, 180), AS_OF));
        }
        if code.is_empty() && r.rng.chance(5) {
            let w = r.rng.date(enrolled, AS_OF);
            r.extra[4] = Some(w);
            r.extra[5] = Some(w);
        }
        Some(r)
    }

    /// The record of entity `e` in the plan's dataset, if it holds one.
    fn entity_rec(&self, plan: &Plan, e: &Entity) -> Option<Rec> {
        let mut rng = Rng::new(self.seed, plan.tag, e.index);
        let registered = rng.date(e.established, min_date(add_days(e.established, 30), AS_OF));
        let mut rec = match plan.kind {
            Kind::MarketRegistration => {
                if !matches!(e.kind, EntityKind::Company | EntityKind::Cooperative) {
                    return None;
                }
                let mut r = Rec::new(rng, e.region, e.established);
                (r.code, r.code2) = (e.market_type, e.status);
                r.rel = self.pick_adult(&mut r.rng, e.established);
                r
            }
            Kind::IndividualBusiness => {
                if e.kind != EntityKind::Individual {
                    return None;
                }
                let mut r = Rec::new(rng, e.region, e.established);
                (r.code, r.code2) = (e.market_type, e.status);
                r.rel = self.pick_adult(&mut r.rng, e.established);
                r
            }
            Kind::QualityLicence => {
                let manufacturer =
                    e.kind == EntityKind::Company && TRADES[e.word as usize].1 == "C";
                if !(manufacturer && rng.chance(600)
                    || e.kind == EntityKind::Company && rng.chance(30))
                {
                    return None;
                }
                let issued = rng.date(add_days(e.established, 60), AS_OF);
                let mut r = Rec::new(rng, e.region, issued);
                r.pick = r.rng.index(LICENCE_SCOPES.len());
                r.extra[0] = Some(r.rng.date(add_days(issued, -90), issued));
                r
            }
            Kind::TaxRegistration => {
                let per_mille = match e.kind {
                    k if k.is_market() => 920,
                    EntityKind::PublicInstitution => 300,
                    _ => 600,
                };
                if !rng.chance(per_mille) {
                    return None;
                }
                Rec::new(rng, e.region, registered)
            }
            Kind::PrivateNonEnterprise | Kind::SocialGroup | Kind::Welfare => {
                let wanted = match plan.kind {
                    Kind::PrivateNonEnterprise => EntityKind::PrivateNonEnterprise,
                    Kind::SocialGroup => EntityKind::SocialGroup,
                    _ => EntityKind::Welfare,
                };
                if e.kind != wanted {
                    return None;
                }
                let mut r = Rec::new(rng, e.region, e.established);
                r.code = match (e.kind, e.word) {
                    (EntityKind::Welfare, 0) => "elderly",
                    (EntityKind::Welfare, 1) => "children",
                    (EntityKind::Welfare, 2) => "disabled",
                    (EntityKind::Welfare, _) => "other",
                    (EntityKind::SocialGroup, _) => {
                        ["academic", "trade", "professional", "federation"][e.variant as usize % 4]
                    }
                    _ => {
                        if e.variant < 17 {
                            "legal_person"
                        } else {
                            "partnership"
                        }
                    }
                };
                r.rel = self.pick_adult(&mut r.rng, e.established);
                r
            }
            Kind::PublicInstitution => {
                if e.kind != EntityKind::PublicInstitution {
                    return None;
                }
                let mut r = Rec::new(rng, e.region, e.established);
                r.rel = self.pick_adult(&mut r.rng, e.established);
                r
            }
            Kind::OtherEntity => {
                if !rng.chance(300) {
                    return None;
                }
                Rec::new(rng, e.region, registered)
            }
            _ => return None,
        };
        if rec.rel.is_none() && plan.has_rel {
            rec.rel = self.pick_adult(&mut rec.rng, rec.start);
        }
        Some(rec)
    }

    fn person_line<'o>(
        &self,
        plan: &Plan,
        p: &Person,
        spouse: Option<(&Person, &Couple)>,
        out: &'o mut Out,
    ) -> Option<&'o [u8]> {
        let mut rec = self.person_rec(plan, p, spouse)?;
        out.begin(p.key.as_str(), rec.version);
        for f in &plan.fields {
            self.field(out, plan, f, Subj::P(p), &mut rec);
        }
        Some(out.finish())
    }

    fn entity_line<'o>(&self, plan: &Plan, e: &Entity, out: &'o mut Out) -> Option<&'o [u8]> {
        let mut rec = self.entity_rec(plan, e)?;
        out.begin(e.key.as_str(), rec.version);
        for f in &plan.fields {
            self.field(out, plan, f, Subj::E(e), &mut rec);
        }
        Some(out.finish())
    }

    /// Writes one field of a record, or nothing when the record has no
    /// value for it. A required field always gets a value.
    fn field(&self, out: &mut Out, plan: &Plan, f: &FieldPlan, s: Subj, rec: &mut Rec) {
        let present = match f.when {
            When::Always => true,
            When::Closed => rec.end.is_some(),
            When::Extra(i) => rec.extra[i].is_some(),
            When::Degree => matches!(rec.code, "10" | "20"),
            When::Practice => !QUALIFICATIONS[rec.pick % QUALIFICATIONS.len()].1.is_empty(),
            When::Sometimes(per_mille) => rec.rng.chance(per_mille),
        };
        if !present && !f.field.required {
            return;
        }
        if !self.value(out, plan, f, f.src, s, rec) && f.field.required {
            self.value(out, plan, f, Src::Generic, s, rec);
        }
    }

    /// Writes the field's value from `src`; false if there is none.
    fn value(
        &self,
        out: &mut Out,
        plan: &Plan,
        f: &FieldPlan,
        src: Src,
        s: Subj,
        rec: &mut Rec,
    ) -> bool {
        let field = f.field;
        let name = field.name.as_str();
        let region = &REGIONS[rec.region];
        let person = match s {
            Subj::P(p) => Some(p),
            Subj::E(_) => None,
        };
        let entity = match s {
            Subj::E(e) => Some(e),
            Subj::P(_) => None,
        };
        // Code fields: the chosen value if the field's list has it, else one
        // of its codes, so that custom code lists still validate.
        let code = |out: &mut Out, rec: &mut Rec, v: &str| {
            if field.ty != FieldType::Code || (!v.is_empty() && field.code(v).is_some()) {
                out.str(name, v);
            } else {
                let c = &field.codes[rec.rng.skewed(field.codes.len())];
                out.str(name, &c.value);
            }
        };
        match src {
            Src::Name => match person {
                Some(p) => out.parts(name, &p.name_parts()),
                None => return self.value(out, plan, f, Src::EntityName, s, rec),
            },
            Src::Gender => match person {
                Some(p) => code(out, rec, p.gender_code()),
                None => return false,
            },
            Src::Ethnicity => match person {
                Some(p) => code(out, rec, p.ethnicity),
                None => return false,
            },
            Src::BirthDate => match person {
                Some(p) => out.date(name, p.birth),
                None => return false,
            },
            Src::Age => match person {
                Some(p) => out.int(name, i64::from(age_at(p.birth, rec.start))),
                None => return false,
            },
            Src::Photo => match person {
                Some(p) if p.photo => out.str(name, PHOTO_PLACEHOLDER),
                _ if field.required => out.str(name, PHOTO_PLACEHOLDER),
                _ => return false,
            },
            Src::Code if !rec.code.is_empty() => code(out, rec, rec.code),
            Src::Code2 if !rec.code2.is_empty() => code(out, rec, rec.code2),
            Src::Code | Src::Code2 => return false,
            Src::Town => {
                let town = match (person, entity) {
                    (Some(p), _) if rec.region == p.home => region.towns[p.town],
                    (_, Some(e)) if rec.region == e.region => region.towns[e.town],
                    _ => region.towns[0],
                };
                out.str(name, town);
            }
            Src::Station => {
                let town = match person {
                    Some(p) if rec.region == p.home => region.towns[p.town],
                    _ => region.towns[(rec.pick) % region.towns.len()],
                };
                out.parts(
                    name,
                    &[
                        region.city,
                        "公安局",
                        region.district,
                        "分局",
                        town_stem(town),
                        "派出所",
                    ],
                );
            }
            Src::AreaName => out.parts(name, &[region.province, region.city, region.district]),
            Src::AreaCode => out.str(name, region.code),
            Src::ProvinceName => out.str(name, region.province),
            Src::CityName => out.str(name, region.city),
            Src::CountyName => out.str(name, region.district),
            Src::Community => {
                let c = rec.rng.pick(COMMUNITIES);
                out.str(name, c)
            }
            Src::HomeAddress => match person {
                Some(p) => self.address(out, name, p.home, TAG_PERSON, p.index, true),
                None => return self.value(out, plan, f, Src::EntityAddress, s, rec),
            },
            Src::OriginAddress => match person {
                Some(p) => {
                    let r = if is_local(p.birth_region) {
                        LOCAL + (p.index % (REGIONS.len() - LOCAL) as u64) as usize
                    } else {
                        p.birth_region
                    };
                    if name == "birth_place" {
                        let r = &REGIONS[p.birth_region];
                        out.parts(name, &[r.province, r.city, r.district]);
                    } else {
                        self.address(out, name, r, TAG_ORIGIN, p.index, true);
                    }
                }
                None => return false,
            },
            Src::Authority => self.authority(out, name, plan.kind.agency(), region, rec),
            Src::AuthorityArea => out.parts(name, &[region.province, region.city, region.district]),
            Src::LocalAuthority => {
                let town = entity.map_or(region.towns[0], |e| region.towns[e.town]);
                out.parts(
                    name,
                    &[
                        region.city,
                        region.district,
                        "市场监督管理局",
                        town_stem(town),
                        "市场监督管理所",
                    ],
                );
            }
            Src::SupervisingUnit => {
                let bureau = match entity.map(|e| e.kind) {
                    Some(EntityKind::Welfare) => "民政局",
                    Some(EntityKind::PrivateNonEnterprise)
                        if entity.is_some_and(|e| e.word == 3 || e.word == 1) =>
                    {
                        "教育局"
                    }
                    _ => BUREAUS[rec.pick % BUREAUS.len()],
                };
                out.parts(name, &[region.city, region.district, bureau]);
            }
            Src::Start => out.date(name, rec.start),
            Src::End => match rec.end {
                Some(d) => out.date(name, d),
                None => return false,
            },
            Src::Extra(i) => match rec.extra[i] {
                Some(d) => out.date(name, d),
                None => return false,
            },
            Src::Established => match entity {
                Some(e) => out.date(name, e.established),
                None => out.date(name, rec.start),
            },
            Src::ValidUntil => out.date(name, add_years(rec.start, 5)),
            Src::RelName => match rec.rel {
                Some(r) => out.parts(name, &r.name_parts()),
                None => return false,
            },
            Src::RelKey => match rec.rel {
                Some(r) => out.str(name, r.key.as_str()),
                None => return false,
            },
            Src::Rel2Name => match rec.rel2 {
                Some(r) => out.parts(name, &r.name_parts()),
                None => return false,
            },
            Src::Rel2Key => match rec.rel2 {
                Some(r) => out.str(name, r.key.as_str()),
                None => return false,
            },
            Src::RelAddress => match rec.rel {
                Some(r) => self.address(out, name, r.home, TAG_PERSON, r.index, true),
                None => match person {
                    Some(p) => self.address(out, name, p.home, TAG_PERSON, p.index, true),
                    None => return false,
                },
            },
            Src::FamilyName => match (rec.rel, person) {
                (Some(r), _) => out.parts(name, &r.name_parts()),
                (None, Some(p)) => {
                    let mut r = *p;
                    r.given = [
                        rec.rng.index(GIVEN.len()) as u8,
                        rec.rng.index(GIVEN.len()) as u8,
                    ];
                    out.parts(name, &r.name_parts());
                }
                _ => return false,
            },
            Src::AnyName => {
                let surname = SURNAMES[rec.rng.skewed(SURNAMES.len())];
                let g1 = GIVEN[rec.rng.index(GIVEN.len())];
                let g2 = if rec.rng.chance(800) {
                    GIVEN[rec.rng.index(GIVEN.len())]
                } else {
                    ""
                };
                out.parts(name, &[surname, g1, g2]);
            }
            Src::Phone => {
                let mut s = std::mem::take(&mut out.scratch);
                s.clear();
                if entity.is_some() {
                    s.push_str(phone_area(region));
                    s.push(char::from(b'2' + rec.rng.below(7) as u8));
                    rec.rng.digits(&mut s, 7);
                } else {
                    s.push_str(rec.rng.pick(&["13", "15", "18", "17", "19"]));
                    rec.rng.digits(&mut s, 9);
                }
                out.str(name, &s);
                out.scratch = s;
            }
            Src::Hospital => {
                let hospital = match region.city {
                    "广州市" => Some(rec.rng.pick(HOSPITALS_GZ)),
                    "深圳市" => Some(rec.rng.pick(HOSPITALS_SZ)),
                    _ => None,
                };
                match hospital {
                    Some(h) => out.str(name, h),
                    None => out.parts(name, &[region.city, region.district, "人民医院"]),
                }
            }
            Src::Doc(doc) => self.doc(out, name, doc, s, rec),
            Src::Text(list) => {
                let t = list[rec.rng.skewed(list.len())];
                out.str(name, t);
            }
            Src::Pair(list, second) => {
                let (a, b) = list[rec.pick % list.len()];
                let v = if second { b } else { a };
                if v.is_empty() {
                    return false;
                }
                out.str(name, v);
            }
            Src::Const(v) => out.str(name, v),
            Src::OrgName => match rec.org {
                Some(e) => self.entity_name(out, name, &e),
                None => {
                    // No generated organizations: a made-up employer.
                    let mut e = self.fake_company(rec);
                    e.region = rec.region;
                    self.entity_name(out, name, &e);
                }
            },
            Src::OrgArea => {
                let r = &REGIONS[rec.org.map_or(rec.region, |e| e.region)];
                out.parts(name, &[r.province, r.city, r.district]);
            }
            Src::OrgSocialSecurityNo => match rec.org {
                Some(e) => {
                    let mut s = std::mem::take(&mut out.scratch);
                    s.clear();
                    let mut n = mix(self.seed ^ e.index);
                    for _ in 0..8 {
                        s.push(char::from(b'0' + (n % 10) as u8));
                        n /= 10;
                    }
                    out.str(name, &s);
                    out.scratch = s;
                }
                None => return false,
            },
            Src::School => {
                let Some(p) = person else { return false };
                if rec.code.is_empty() || matches!(rec.code, "40" | "60" | "70") {
                    let level = if rec.code == "70" || (rec.code.is_empty() && p.age() >= 12) {
                        "中学"
                    } else {
                        "小学"
                    };
                    let num =
                        ["一", "二", "三", "四", "五", "六", "七", "八", "九", "十"][rec.pick % 10];
                    let which = if name == "transferred_from" || name == "transferred_to" {
                        ["十一", "十二", "十三", "十四", "十五", "十六"]
                            [(rec.pick + name.len()) % 6]
                    } else {
                        num
                    };
                    out.parts(name, &[region.city, region.district, "第", which, level]);
                } else {
                    out.str(name, UNIVERSITIES[rec.pick % UNIVERSITIES.len()]);
                }
            }
            Src::SchoolAddress => {
                self.address(out, name, rec.region, TAG_ADDRESS, rec.pick as u64, false)
            }
            Src::Major => {
                if !matches!(rec.code, "10" | "20" | "30" | "40") {
                    return false;
                }
                out.str(name, MAJORS[rec.pick % MAJORS.len()]);
            }
            Src::Degree => {
                let degree = match rec.code {
                    "10" if rec.pick & 3 == 0 => "doctor",
                    "10" => "master",
                    "20" => "bachelor",
                    _ => return false,
                };
                code(out, rec, degree);
            }
            Src::EntityName => match entity {
                Some(e) => self.entity_name(out, name, e),
                None => return false,
            },
            Src::EntityAddress => match entity {
                Some(e) => self.address(out, name, e.region, TAG_ENTITY, e.index, false),
                None => return false,
            },
            Src::EntityKeyText => match entity {
                Some(e) => out.str(name, e.key.as_str()),
                None => return false,
            },
            Src::Industry => {
                let industry = match entity {
                    Some(e) => match e.kind {
                        EntityKind::Company => TRADES[e.word as usize].1,
                        EntityKind::Individual => SHOPS[e.word as usize].1,
                        EntityKind::Cooperative => "A",
                        _ => "S",
                    },
                    None => "",
                };
                code(out, rec, industry);
            }
            Src::Scope => match entity {
                Some(e) => {
                    let scope = match e.kind {
                        EntityKind::Company => TRADES[e.word as usize].2,
                        EntityKind::Individual => SHOPS[e.word as usize].2,
                        EntityKind::Cooperative => "组织成员开展农产品生产、收购、销售及技术服务",
                        EntityKind::PrivateNonEnterprise => PNE_WORDS[e.word as usize].1,
                        EntityKind::SocialGroup => "行业交流、业务培训、咨询服务",
                        EntityKind::Welfare => "养老、托育、康复服务",
                        EntityKind::PublicInstitution => "为社会提供公益服务",
                    };
                    out.str(name, scope);
                }
                None => return false,
            },
            Src::Capital => {
                let Some(e) = entity else { return false };
                if e.market_type == "branch" {
                    return false;
                }
                let amounts: &[&str] = &[
                    "100", "50", "10", "500", "200", "30", "1000", "300", "5", "3", "2000", "5000",
                    "1", "10000", "12000.5",
                ];
                out.str(name, amounts[rec.rng.skewed(amounts.len())]);
            }
            Src::Generic => self.generic(out, plan, field, s, rec),
        }
        true
    }

    /// A value for a field nothing else knows about, from its type and
    /// title.
    fn generic(&self, out: &mut Out, plan: &Plan, field: &Field, s: Subj, rec: &mut Rec) {
        let name = field.name.as_str();
        let region = &REGIONS[rec.region];
        let title = field.title.as_str();
        match field.ty {
            FieldType::String => {
                if title.contains("姓名") {
                    match s {
                        Subj::P(p) => out.parts(name, &p.name_parts()),
                        Subj::E(_) => out.str(name, "张伟"),
                    }
                } else if title.contains("地址") || title.contains("住址") || title.contains("场所")
                {
                    self.address(
                        out,
                        name,
                        rec.region,
                        TAG_ADDRESS,
                        rec.rng.below(1 << 20),
                        false,
                    );
                } else if title.contains("电话") {
                    out.parts(name, &[phone_area(region), "83", "001234"]);
                } else if title.contains("行政区划") {
                    out.parts(name, &[region.province, region.city, region.district]);
                } else if title.contains("机关")
                    || title.contains("单位")
                    || title.contains("部门")
                    || title.contains("机构")
                {
                    self.authority(out, name, plan.kind.agency(), region, rec);
                } else if title.contains("号") || title.contains("码") {
                    self.doc(out, name, Doc::AreaYear("", 6), s, rec);
                } else {
                    let t = GENERIC_TEXT[rec.rng.index(GENERIC_TEXT.len())];
                    out.str(name, t);
                }
            }
            FieldType::Date => out.date(name, rec.start),
            FieldType::Datetime => {
                let mut s = std::mem::take(&mut out.scratch);
                s.clear();
                push_date(&mut s, rec.start);
                let (h, m) = (8 + rec.rng.below(10), rec.rng.below(60));
                s.push('T');
                push_2(&mut s, h as u32);
                s.push(':');
                push_2(&mut s, m as u32);
                s.push_str(":00Z");
                out.str(name, &s);
                out.scratch = s;
            }
            FieldType::Integer => out.int(name, rec.rng.below(100) as i64),
            FieldType::Decimal => {
                let mut s = std::mem::take(&mut out.scratch);
                s.clear();
                let cents = 10_000 + rec.rng.below(2_000_000);
                s.push_str(&(cents / 100).to_string());
                s.push('.');
                push_2(&mut s, (cents % 100) as u32);
                out.str(name, &s);
                out.scratch = s;
            }
            FieldType::Bool => out.raw(name, if rec.rng.chance(700) { "true" } else { "false" }),
            FieldType::Code => {
                let c = &field.codes[rec.rng.skewed(field.codes.len())];
                out.str(name, &c.value);
            }
            FieldType::PersonKey => match (rec.rel, s) {
                (Some(r), _) => out.str(name, r.key.as_str()),
                (None, Subj::P(p)) => out.str(name, p.key.as_str()),
                (None, Subj::E(_)) => {
                    let p = self.person(rec.rng.below(self.persons.max(1)));
                    out.str(name, p.key.as_str());
                }
            },
            FieldType::EntityKey => match s {
                Subj::E(e) => out.str(name, e.key.as_str()),
                Subj::P(_) => {
                    let e = self.entity(rec.rng.below(self.entities.max(1)));
                    out.str(name, e.key.as_str());
                }
            },
            FieldType::Bytes => out.str(name, PHOTO_PLACEHOLDER),
        }
    }

    fn authority(&self, out: &mut Out, name: &str, agency: Agency, r: &Region, rec: &Rec) {
        let (c, d) = (r.city, r.district);
        match agency {
            Agency::Police => out.parts(name, &[c, "公安局", d, "分局"]),
            Agency::CivilAffairs => out.parts(name, &[c, d, "民政局"]),
            Agency::Health => out.parts(name, &[c, d, "卫生健康局"]),
            Agency::HumanResources => out.parts(name, &[c, d, "人力资源和社会保障局"]),
            Agency::Education => out.parts(name, &[c, d, "教育局"]),
            Agency::DisabledFederation => out.parts(name, &[c, d, "残疾人联合会"]),
            Agency::HousingFund => {
                out.parts(name, &[c, "住房公积金管理中心", district_stem(r), "管理部"])
            }
            Agency::Market => out.parts(name, &[c, d, "市场监督管理局"]),
            Agency::Tax => out.parts(name, &["国家税务总局", c, d, "税务局"]),
            Agency::Establishment => out.parts(name, &[c, d, "事业单位登记管理局"]),
            Agency::Government => out.parts(name, &[c, d, BUREAUS[rec.pick % BUREAUS.len()]]),
        }
    }

    /// A street address in region `r`, the same every time for the same
    /// `(purpose, index)`.
    fn address(&self, out: &mut Out, name: &str, r: usize, purpose: u64, index: u64, home: bool) {
        let region = &REGIONS[r];
        let mut rng = Rng::new(self.seed, TAG_ADDRESS ^ purpose << 8, index);
        let road = rng.pick(roads(region));
        let mut s = std::mem::take(&mut out.scratch);
        s.clear();
        s.push_str(region.city);
        s.push_str(region.district);
        s.push_str(road);
        s.push_str(&(1 + rng.below(800)).to_string());
        s.push('号');
        if home {
            s.push_str(&(1 + rng.below(30)).to_string());
            s.push('栋');
            s.push_str(&((1 + rng.below(30)) * 100 + 1 + rng.below(8)).to_string());
            s.push('房');
        } else if rng.chance(700) {
            s.push_str(&((1 + rng.below(40)) * 100 + 1 + rng.below(20)).to_string());
            s.push('室');
        }
        out.str(name, &s);
        out.scratch = s;
    }

    fn doc(&self, out: &mut Out, name: &str, doc: Doc, s: Subj, rec: &mut Rec) {
        let mut t = std::mem::take(&mut out.scratch);
        t.clear();
        match doc {
            Doc::AreaYear(prefix, n) => {
                t.push_str(prefix);
                t.push_str(REGIONS[rec.region].code);
                t.push_str(&rec.start.year().to_string());
                rec.rng.digits(&mut t, n);
            }
            Doc::Certificate(prefix, n, suffix) => {
                t.push_str(prefix);
                t.push_str(REGIONS[rec.region].code);
                rec.rng.digits(&mut t, n);
                t.push_str(suffix);
            }
            Doc::Digits(prefix, n) => {
                t.push_str(prefix);
                rec.rng.digits(&mut t, n);
            }
            Doc::StudentNo => match s {
                Subj::P(p) => {
                    t.push('G');
                    t.push_str(p.key.as_str());
                }
                Subj::E(_) => rec.rng.digits(&mut t, 12),
            },
            Doc::DisabilityCard => match s {
                Subj::P(p) => {
                    t.push_str(p.key.as_str());
                    t.push(char::from(b'1' + rec.rng.below(7) as u8));
                    t.push(char::from(b'1' + rec.rng.below(4) as u8));
                }
                Subj::E(_) => rec.rng.digits(&mut t, 20),
            },
            Doc::RegistrationNo => match s {
                Subj::E(e) if e.legacy => {
                    t.push_str(REGIONS[e.region].code);
                    let mut n = mix(self.seed ^ e.index.wrapping_mul(31));
                    for _ in 0..9 {
                        t.push(char::from(b'0' + (n % 10) as u8));
                        n /= 10;
                    }
                }
                _ => {
                    out.scratch = t;
                    return;
                }
            },
        }
        out.str(name, &t);
        out.scratch = t;
    }

    fn entity_name(&self, out: &mut Out, name: &str, e: &Entity) {
        let r = &REGIONS[e.region];
        let brand_a = BRAND_A[e.brand[0] as usize];
        let brand_b = BRAND_B[e.brand[1] as usize];
        let (c, d) = (r.city, r.district);
        match e.kind {
            EntityKind::Company => {
                let trade = TRADES[e.word as usize].0;
                match e.market_type {
                    "joint_stock" => out.parts(name, &[c, brand_a, brand_b, trade, "股份有限公司"]),
                    "sole_proprietorship" => {
                        out.parts(name, &[c, d, brand_a, brand_b, trade, "商行"])
                    }
                    "partnership" => {
                        out.parts(name, &[c, brand_a, brand_b, trade, "合伙企业（有限合伙）"])
                    }
                    "branch" => out.parts(
                        name,
                        &[
                            c,
                            brand_a,
                            brand_b,
                            trade,
                            "有限公司",
                            district_stem(r),
                            "分公司",
                        ],
                    ),
                    "foreign_invested" => out.parts(
                        name,
                        &[
                            brand_a,
                            brand_b,
                            trade,
                            "（",
                            c.trim_end_matches('市'),
                            "）有限公司",
                        ],
                    ),
                    "state_owned" => out.parts(name, &[c, brand_a, brand_b, trade, "公司"]),
                    "collective" => out.parts(name, &[c, d, brand_a, brand_b, trade, "厂"]),
                    _ => out.parts(name, &[c, d, brand_a, brand_b, trade, "有限公司"]),
                }
            }
            EntityKind::Individual => {
                out.parts(name, &[c, d, brand_a, brand_b, SHOPS[e.word as usize].0])
            }
            EntityKind::Cooperative => out.parts(
                name,
                &[
                    c,
                    d,
                    brand_a,
                    brand_b,
                    COOP_WORDS[e.word as usize],
                    "专业合作社",
                ],
            ),
            EntityKind::SocialGroup => {
                out.parts(name, &[c, d, GROUP_WORDS[e.word as usize], "协会"])
            }
            EntityKind::PrivateNonEnterprise => out.parts(
                name,
                &[c, d, brand_a, brand_b, PNE_WORDS[e.word as usize].0],
            ),
            EntityKind::Welfare => {
                let w = ["养老院", "儿童福利院", "残疾人托养中心", "社会福利服务中心"]
                    [e.word as usize % 4];
                out.parts(name, &[c, d, brand_a, brand_b, w]);
            }
            EntityKind::PublicInstitution => {
                let w = e.word as usize;
                let num = ["一", "二", "三", "四", "五", "六", "七", "八", "九", "十"]
                    [e.variant as usize % 10];
                if w < PUBLIC_WORDS.len() {
                    out.parts(name, &[c, d, PUBLIC_WORDS[w]]);
                } else if w == PUBLIC_WORDS.len() {
                    out.parts(name, &[c, d, "第", num, "小学"]);
                } else {
                    out.parts(name, &[c, d, "第", num, "中学"]);
                }
            }
        }
    }

    /// An employer when no entities are generated: named like a company,
    /// keyed nowhere.
    fn fake_company(&self, rec: &mut Rec) -> Entity {
        let e = self.entity(rec.rng.below(ENTITY_SPACE));
        Entity {
            kind: EntityKind::Company,
            market_type: "limited_liability",
            word: e.word % TRADES.len() as u8,
            ..e
        }
    }
}

// ---------------------------------------------------------------------------
// JSON output, written by hand into one reused buffer.

#[derive(Default)]
struct Out {
    buf: Vec<u8>,
    fields: usize,
    /// For values assembled from pieces.
    scratch: String,
}

impl Out {
    fn begin(&mut self, key: &str, version: u64) {
        self.buf.clear();
        self.fields = 0;
        self.buf.extend_from_slice(b"{\"key\":\"");
        self.buf.extend_from_slice(key.as_bytes());
        self.buf.extend_from_slice(b"\",\"version\":");
        push_u64(&mut self.buf, version);
        self.buf
            .extend_from_slice(b",\"op\":\"upsert\",\"fields\":{");
    }

    fn finish(&mut self) -> &[u8] {
        self.buf.extend_from_slice(b"}}");
        &self.buf
    }

    fn name(&mut self, name: &str) {
        if self.fields > 0 {
            self.buf.push(b',');
        }
        self.fields += 1;
        self.buf.push(b'"');
        push_escaped(&mut self.buf, name);
        self.buf.extend_from_slice(b"\":");
    }

    fn str(&mut self, name: &str, v: &str) {
        self.parts(name, &[v]);
    }

    fn parts(&mut self, name: &str, parts: &[&str]) {
        self.name(name);
        self.buf.push(b'"');
        for p in parts {
            push_escaped(&mut self.buf, p);
        }
        self.buf.push(b'"');
    }

    fn raw(&mut self, name: &str, v: &str) {
        self.name(name);
        self.buf.extend_from_slice(v.as_bytes());
    }

    fn int(&mut self, name: &str, v: i64) {
        self.name(name);
        if v < 0 {
            self.buf.push(b'-');
        }
        push_u64(&mut self.buf, v.unsigned_abs());
    }

    fn date(&mut self, name: &str, d: Date) {
        self.name(name);
        self.buf.push(b'"');
        let (y, m, day) = (d.year() as u32, u8::from(d.month()) as u32, d.day() as u32);
        self.buf.extend_from_slice(&[
            b'0' + (y / 1000 % 10) as u8,
            b'0' + (y / 100 % 10) as u8,
            b'0' + (y / 10 % 10) as u8,
            b'0' + (y % 10) as u8,
            b'-',
            b'0' + (m / 10) as u8,
            b'0' + (m % 10) as u8,
            b'-',
            b'0' + (day / 10) as u8,
            b'0' + (day % 10) as u8,
            b'"',
        ]);
    }
}

fn push_u64(buf: &mut Vec<u8>, mut n: u64) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf.extend_from_slice(&tmp[i..]);
}

fn push_2(s: &mut String, n: u32) {
    s.push(char::from(b'0' + (n / 10 % 10) as u8));
    s.push(char::from(b'0' + (n % 10) as u8));
}

fn push_date(s: &mut String, d: Date) {
    let y = d.year() as u32;
    push_2(s, y / 100);
    push_2(s, y % 100);
    s.push('-');
    push_2(s, u8::from(d.month()) as u32);
    s.push('-');
    push_2(s, u32::from(d.day()));
}

/// Whether any byte is a control character, a quote or a backslash. Almost
/// no value has one, and every byte written passes here, so the test looks
/// at eight bytes at a time (the `hasless`/`haszero` tricks of Bit
/// Twiddling Hacks, exact as a yes/no answer).
fn needs_escape(bytes: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let has_zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let x = u64::from_le_bytes(c.try_into().expect("8 bytes"));
        let below_space = x.wrapping_sub(ONES * 0x20) & !x & HIGH;
        if below_space
            | has_zero(x ^ (ONES * u64::from(b'"')))
            | has_zero(x ^ (ONES * u64::from(b'\\')))
            != 0
        {
            return true;
        }
    }
    chunks
        .remainder()
        .iter()
        .any(|&b| b < 0x20 || b == b'"' || b == b'\\')
}

/// The body of a JSON string: quotes, backslashes and control characters
/// escaped, everything else (Chinese included) as UTF-8.
fn push_escaped(buf: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    if !needs_escape(bytes) {
        buf.extend_from_slice(bytes);
        return;
    }
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => b"",
            _ => continue,
        };
        buf.extend_from_slice(&bytes[start..i]);
        if esc.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            buf.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[(b >> 4) as usize],
                HEX[(b & 15) as usize],
            ]);
        } else {
            buf.extend_from_slice(esc);
        }
        start = i + 1;
    }
    buf.extend_from_slice(&bytes[start..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use basedata_store::value::Value;
    use serde_json::Value as Json;
    use std::collections::{HashMap, HashSet};

    const SAMPLE: GenConfig = GenConfig {
        persons: 20_000,
        entities: 5_000,
        seed: 42,
    };

    /// Every document type's generated numbers parse back as themselves,
    /// of that type, and are distinct.
    #[test]
    fn document_keys_are_valid_and_distinct() {
        for doc in DocType::ALL {
            let mut seen = HashSet::new();
            for i in 0..3_000 {
                let key = doc_key(&SAMPLE, doc, i);
                assert_eq!(key.doc_type(), doc, "{key:?}");
                assert_eq!(SubjectKey::parse_doc(doc, key.as_str()), Ok(key));
                assert!(seen.insert(key), "{doc:?} {i} repeats");
            }
            let other = GenConfig { seed: 43, ..SAMPLE };
            assert_ne!(doc_key(&other, doc, 0), doc_key(&SAMPLE, doc, 0), "{doc:?}");
        }
        let kinds: HashSet<_> = (0..30)
            .map(|i| match doc_key(&SAMPLE, DocType::HkMacaoTaiwanPermit, i) {
                SubjectKey::Document(k) => k.kind(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(kinds.len(), 3);
    }

    /// Generated lines of one configuration, by dataset, parsed.
    struct Sample {
        catalog: Catalog,
        lines: HashMap<String, Vec<Json>>,
    }

    impl Sample {
        fn of(&self, ds: &str) -> &[Json] {
            self.lines.get(ds).map_or(&[], Vec::as_slice)
        }

        /// Records of a dataset by key.
        fn by_key(&self, ds: &str) -> HashMap<&str, &serde_json::Map<String, Json>> {
            self.of(ds).iter().map(|l| (key(l), fields(l))).collect()
        }
    }

    fn key(line: &Json) -> &str {
        line["key"].as_str().expect("key is a string")
    }

    fn fields(line: &Json) -> &serde_json::Map<String, Json> {
        line["fields"].as_object().expect("fields is an object")
    }

    fn text<'a>(f: &'a serde_json::Map<String, Json>, name: &str) -> Option<&'a str> {
        f.get(name).and_then(Json::as_str)
    }

    fn collect(cfg: &GenConfig, catalog: &Catalog) -> HashMap<String, Vec<Json>> {
        let mut lines: HashMap<String, Vec<Json>> = HashMap::new();
        generate(cfg, catalog, &mut |ds, line| {
            let v = serde_json::from_slice(line)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            lines.entry(ds.to_owned()).or_default().push(v);
            Ok(())
        })
        .unwrap();
        lines
    }

    fn sample() -> &'static Sample {
        static SAMPLE_DATA: OnceLock<Sample> = OnceLock::new();
        SAMPLE_DATA.get_or_init(|| {
            let catalog = Catalog::builtin();
            let lines = collect(&SAMPLE, &catalog);
            Sample { catalog, lines }
        })
    }

    fn raw(cfg: &GenConfig) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        generate(cfg, &Catalog::builtin(), &mut |ds, line| {
            out.push((ds.to_owned(), line.to_vec()));
            Ok(())
        })
        .unwrap();
        out
    }

    /// Checks every line against the catalog the way ingestion does: the
    /// key is valid for the subject, the op and version are right, every
    /// field exists and its value fits the field's type and code list, and
    /// required fields are present.
    fn check_lines(catalog: &Catalog, lines: &HashMap<String, Vec<Json>>) -> usize {
        let mut checked = 0;
        for (ds_id, lines) in lines {
            let ds = catalog
                .dataset(ds_id)
                .unwrap_or_else(|| panic!("unknown dataset {ds_id}"));
            for line in lines {
                let k = key(line);
                match ds.subject {
                    Subject::Person => {
                        assert_eq!(PersonKey::parse(k).map(|p| p.to_string()).as_deref(), Ok(k))
                    }
                    Subject::Entity => {
                        assert_eq!(EntityKey::parse(k).map(|e| e.to_string()).as_deref(), Ok(k))
                    }
                }
                assert_eq!(line["op"], "upsert", "{line}");
                let version = line["version"]
                    .as_u64()
                    .expect("version is an unsigned integer");
                assert!((1..=3).contains(&version), "{line}");
                let obj = line.as_object().unwrap();
                assert_eq!(obj.len(), 4, "{line}");
                let fields = fields(line);
                for (name, value) in fields {
                    let field = ds
                        .field(name)
                        .unwrap_or_else(|| panic!("{ds_id}: no field {name}: {line}"));
                    match Value::from_json(field, value) {
                        Ok(Some(_)) => {}
                        other => panic!("{ds_id}.{name} = {value}: {other:?}"),
                    }
                }
                for f in ds.fields.iter().filter(|f| f.required) {
                    assert!(
                        fields.contains_key(&f.name),
                        "{ds_id}: required {} missing: {line}",
                        f.name
                    );
                }
                checked += 1;
            }
        }
        checked
    }

    #[test]
    fn every_line_fits_the_catalog() {
        let s = sample();
        let n = check_lines(&s.catalog, &s.lines);
        assert!(n > 50_000, "{n}");
        // Every dataset of the built-in catalog gets some records.
        for ds in s.catalog.datasets() {
            assert!(!s.of(&ds.id).is_empty(), "{} is empty", ds.id);
        }
    }

    #[test]
    fn same_seed_same_bytes_other_seed_other_data() {
        let cfg = GenConfig {
            persons: 3_000,
            entities: 1_000,
            seed: 7,
        };
        let a = raw(&cfg);
        assert_eq!(a, raw(&cfg));
        let b = raw(&GenConfig { seed: 8, ..cfg });
        assert_ne!(a, b);
        let hukou = |v: &[(String, Vec<u8>)]| {
            v.iter()
                .filter(|(d, _)| d == "hukou")
                .map(|(_, l)| l.clone())
                .collect::<Vec<_>>()
        };
        let (ha, hb) = (hukou(&a), hukou(&b));
        assert_eq!(ha.len(), hb.len());
        let same = ha.iter().zip(&hb).filter(|(x, y)| x == y).count();
        assert!(same < 10, "{same} identical hukou lines across seeds");
        // Lines of a dataset come in subject order, whatever the interleaving.
        let keys: Vec<String> = ha
            .iter()
            .map(|l| String::from_utf8(l[8..26].to_vec()).unwrap())
            .collect();
        let expected: Vec<String> = (0..cfg.persons)
            .map(|i| person_key(&cfg, i).to_string())
            .collect();
        assert_eq!(keys, expected);
    }

    #[test]
    fn person_keys_are_valid_and_unique() {
        let cfg = GenConfig {
            persons: 200_000,
            entities: 0,
            seed: 3,
        };
        let mut keys = HashSet::new();
        let mut men = 0u64;
        let mut out = Out::default();
        let world = World::new(&cfg);
        let catalog = Catalog::builtin();
        let plan = Plan::new(catalog.dataset("hukou").unwrap());
        for i in 0..cfg.persons {
            let p = world.person(i);
            let k = PersonKey::parse(p.key.as_str()).unwrap();
            assert_eq!(k, p.key);
            assert!(keys.insert(k), "duplicate key {}", k.as_str());
            assert_eq!(k.birth_date(), p.birth);
            assert!((ymd(1930, 1, 1)..=ymd(2024, 12, 31)).contains(&p.birth));
            assert_eq!(k.region(), REGIONS[p.birth_region].code);
            // Even persons are men (odd sequence number), odd ones women.
            assert_eq!(k.sequence() % 2 == 1, i % 2 == 0);
            assert_eq!(p.male, i % 2 == 0);
            men += u64::from(p.male);
            let line: Json =
                serde_json::from_slice(world.person_line(&plan, &p, None, &mut out).unwrap())
                    .unwrap();
            assert_eq!(line["fields"]["gender"], k.gender().code());
            assert_eq!(line["fields"]["birth_date"], value_date(k.birth_date()));
        }
        assert_eq!(men, cfg.persons / 2);
    }

    fn value_date(d: Date) -> String {
        basedata_store::value::format_date(d)
    }

    #[test]
    fn entity_keys_are_valid_and_unique() {
        let cfg = GenConfig {
            persons: 0,
            entities: 100_000,
            seed: 3,
        };
        let world = World::new(&cfg);
        let mut keys = HashSet::new();
        for i in 0..cfg.entities {
            let e = world.entity(i);
            assert_eq!(EntityKey::parse(e.key.as_str()), Ok(e.key));
            assert_eq!(e.key, entity_key(&cfg, i));
            assert!(keys.insert(e.key), "duplicate key {}", e.key.as_str());
            assert_eq!(
                (e.key.registration_authority(), e.key.organization_type()),
                e.kind.code_chars()
            );
            assert!(is_local(
                REGIONS
                    .iter()
                    .position(|r| r.code == e.key.region())
                    .unwrap()
            ));
        }
    }

    #[test]
    fn keys_stay_unique_deep_into_the_key_space() {
        // Indices near the top of what benchmarks generate map into the
        // same slots as small ones only if the permutation is broken.
        let cfg = GenConfig {
            persons: 100_000_000,
            entities: 100_000_000,
            seed: 11,
        };
        let mut persons = HashSet::new();
        let mut entities = HashSet::new();
        for i in (0..20_000).chain(99_980_000..100_000_000) {
            assert!(persons.insert(person_key(&cfg, i)));
            assert!(entities.insert(entity_key(&cfg, i)));
        }
    }

    #[test]
    fn feistel_is_a_permutation() {
        for (domain, seed) in [(1, 0), (2, 1), (3, 2), (1000, 3), (4096, 4), (77_777, 5)] {
            let f = Feistel::new(domain, seed, 1);
            let mut seen = vec![false; domain as usize];
            for x in 0..domain {
                let y = f.permute(x) as usize;
                assert!(!seen[y], "domain {domain}: {y} twice");
                seen[y] = true;
            }
        }
    }

    #[test]
    fn the_space_holds_the_largest_populations() {
        let world = World::new(&GenConfig {
            persons: 0,
            entities: 0,
            seed: 0,
        });
        assert!(
            world.person_capacity() >= 400_000_000,
            "{}",
            world.person_capacity()
        );
        const { assert!(ENTITY_SPACE >= 400_000_000) };
        let too_many = GenConfig {
            persons: world.person_capacity() + 1,
            entities: 0,
            seed: 0,
        };
        let err = generate(&too_many, &Catalog::builtin(), &mut |_, _| Ok(())).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn person_functions_match_the_files() {
        let s = sample();
        let hukou = s.of("hukou");
        assert_eq!(hukou.len() as u64, SAMPLE.persons);
        for i in (0..SAMPLE.persons).step_by(97) {
            let line = &hukou[i as usize];
            assert_eq!(key(line), person_key(&SAMPLE, i).as_str());
            assert_eq!(&person_hukou(&SAMPLE, i), fields(line));
        }
        let entity_keys: HashSet<String> = (0..SAMPLE.entities)
            .map(|i| entity_key(&SAMPLE, i).to_string())
            .collect();
        for ds in s.catalog.datasets_for(Subject::Entity) {
            for line in s.of(&ds.id) {
                assert!(entity_keys.contains(key(line)), "{}: {}", ds.id, key(line));
            }
        }
        let market: Vec<&str> = s.of("market_registration").iter().map(key).collect();
        let expected: Vec<String> = (0..SAMPLE.entities)
            .map(|i| World::new(&SAMPLE).entity(i))
            .filter(|e| matches!(e.kind, EntityKind::Company | EntityKind::Cooperative))
            .map(|e| e.key.to_string())
            .collect();
        assert_eq!(market, expected);
    }

    #[test]
    fn hukou_status_shares_and_cancellations() {
        let s = sample();
        let n = s.of("hukou").len() as f64;
        let mut counts: HashMap<(&str, &str), usize> = HashMap::new();
        let mut han = 0;
        let mut photos = 0;
        for line in s.of("hukou") {
            let f = fields(line);
            let status = text(f, "status").unwrap();
            let reason = text(f, "cancel_reason").unwrap_or("");
            *counts.entry((status, reason)).or_default() += 1;
            han += usize::from(text(f, "ethnicity") == Some("01"));
            photos += usize::from(f.contains_key("photo"));
            match status {
                "normal" => {
                    for c in [
                        "cancel_date",
                        "cancel_reason",
                        "cancel_area",
                        "cancel_police_station",
                    ] {
                        assert!(!f.contains_key(c), "{line}");
                    }
                }
                _ => {
                    assert!(
                        f.contains_key("cancel_date") && f.contains_key("cancel_police_station"),
                        "{line}"
                    );
                    assert!(
                        text(f, "cancel_date").unwrap() > text(f, "birth_date").unwrap(),
                        "{line}"
                    );
                }
            }
            assert!(text(f, "registered_police_station")
                .unwrap()
                .ends_with("派出所"));
        }
        let share = |k: (&str, &str)| counts.get(&k).copied().unwrap_or(0) as f64 / n;
        assert!((0.93..0.97).contains(&share(("normal", ""))), "{counts:?}");
        assert!(
            (0.02..0.04).contains(&share(("cancelled", "moved_out"))),
            "{counts:?}"
        );
        assert!(
            (0.012..0.03).contains(&share(("cancelled", "deceased"))),
            "{counts:?}"
        );
        assert_eq!(counts.len(), 3, "{counts:?}");
        assert!((0.9..0.98).contains(&(han as f64 / n)), "{han}");
        assert!((0.005..0.02).contains(&(photos as f64 / n)), "{photos}");
    }

    #[test]
    fn every_deceased_person_has_a_death_record() {
        let s = sample();
        let deaths = s.by_key("death");
        let mut deceased = 0;
        for line in s.of("hukou") {
            let f = fields(line);
            let dead = text(f, "cancel_reason") == Some("deceased");
            match deaths.get(key(line)) {
                Some(d) => {
                    assert!(dead, "death record for a living person {}", key(line));
                    deceased += 1;
                    let died = text(d, "death_date").unwrap();
                    assert!(died > text(f, "birth_date").unwrap());
                    assert!(died <= text(f, "cancel_date").unwrap(), "{line} {d:?}");
                    assert_eq!(text(d, "name"), text(f, "name"));
                    assert_eq!(text(d, "gender"), text(f, "gender"));
                    assert!(CAUSES_OF_DEATH.contains(&text(d, "cause_of_death").unwrap()));
                }
                None => assert!(!dead, "no death record for {}", key(line)),
            }
        }
        assert_eq!(deceased, deaths.len());
        assert!(deceased > 100);
    }

    #[test]
    fn marriages_are_symmetric() {
        let s = sample();
        let hukou: Vec<&Json> = s.of("hukou").iter().collect();
        let index: HashMap<&str, usize> =
            hukou.iter().enumerate().map(|(i, l)| (key(l), i)).collect();
        let marriage = s.by_key("marriage");
        let mut by_status: HashMap<&str, usize> = HashMap::new();
        for (k, m) in &marriage {
            let i = index[k];
            let partner = hukou[i ^ 1];
            let pm = marriage
                .get(key(partner))
                .unwrap_or_else(|| panic!("{k} married, partner has no record"));
            // Opposite genders, both adults at the wedding, one wedding.
            assert_ne!(fields(hukou[i])["gender"], fields(partner)["gender"]);
            assert_eq!(m.get("marriage_date"), pm.get("marriage_date"));
            assert_eq!(m.get("issuing_authority"), pm.get("issuing_authority"));
            assert_eq!(text(m, "name"), text(fields(hukou[i]), "name"));
            let wed = text(m, "marriage_date").unwrap();
            let born = text(fields(hukou[i]), "birth_date").unwrap();
            assert!(
                wed[..4].parse::<i32>().unwrap() - born[..4].parse::<i32>().unwrap() >= 20,
                "{k}"
            );
            let status = text(m, "marital_status").unwrap();
            let partner_status = text(pm, "marital_status").unwrap();
            *by_status.entry(status).or_default() += 1;
            let partner_dead = text(fields(partner), "cancel_reason") == Some("deceased");
            match status {
                "30" => assert!(partner_dead, "{k} widowed but spouse alive"),
                "40" => {
                    assert_eq!(partner_status, "40");
                    assert_eq!(m.get("divorce_date"), pm.get("divorce_date"));
                    assert!(text(m, "divorce_date").unwrap() > wed);
                }
                "20" | "21" | "22" => {
                    assert!(
                        matches!(partner_status, "20" | "21" | "22" | "30"),
                        "{partner_status}"
                    );
                    let dead = text(fields(hukou[i]), "cancel_reason") == Some("deceased");
                    if partner_status == "30" {
                        assert!(dead, "{k}: partner widowed, person alive");
                    }
                    if dead && !partner_dead {
                        assert_eq!(partner_status, "30", "{k}");
                    }
                    assert!(!m.contains_key("divorce_date"));
                }
                other => panic!("unexpected marital status {other}"),
            }
        }
        for st in ["20", "21", "22", "30", "40"] {
            assert!(
                by_status.get(st).copied().unwrap_or(0) > 0,
                "no {st}: {by_status:?}"
            );
        }
        assert!(marriage.len() > s.of("hukou").len() / 3);
    }

    #[test]
    fn representatives_and_parents_are_generated_persons() {
        let s = sample();
        let hukou = s.by_key("hukou");
        let names = |k: &str| {
            text(
                hukou
                    .get(k)
                    .unwrap_or_else(|| panic!("{k} is not a generated person")),
                "name",
            )
        };
        let mut checked = 0;
        for (ds, name_field, key_field) in [
            (
                "market_registration",
                "legal_representative",
                "legal_representative_id",
            ),
            ("individual_business", "operator_name", "operator_id"),
            (
                "social_group",
                "legal_representative",
                "legal_representative_id",
            ),
            (
                "private_non_enterprise",
                "legal_representative",
                "legal_representative_id",
            ),
            (
                "welfare_institution",
                "legal_representative",
                "legal_representative_id",
            ),
            ("birth", "father_name", "father_id"),
            ("birth", "mother_name", "mother_id"),
        ] {
            for line in s.of(ds) {
                let f = fields(line);
                let Some(id) = text(f, key_field) else {
                    continue;
                };
                assert_eq!(names(id), text(f, name_field), "{ds}: {line}");
                let rep = hukou[id];
                if ds != "birth" {
                    let founded = text(f, "established_on")
                        .or(text(f, "registration_date"))
                        .unwrap();
                    let born = text(rep, "birth_date").unwrap();
                    assert!(
                        founded[..4].parse::<i32>().unwrap() - born[..4].parse::<i32>().unwrap()
                            >= 18,
                        "{line}"
                    );
                }
                checked += 1;
            }
        }
        assert!(checked > 5_000, "{checked}");
        // Children take their father's surname; parents are a couple.
        let marriage = s.by_key("marriage");
        let mut with_parents = 0;
        for line in s.of("birth") {
            let f = fields(line);
            let (Some(father), Some(mother)) = (text(f, "father_id"), text(f, "mother_id")) else {
                continue;
            };
            with_parents += 1;
            let surname = |n: &str| {
                SURNAMES
                    .iter()
                    .filter(|s| n.starts_with(*s))
                    .max_by_key(|s| s.len())
                    .copied()
            };
            assert_eq!(
                surname(text(f, "name").unwrap()),
                surname(text(f, "father_name").unwrap()),
                "{line}"
            );
            let (fm, mm) = (marriage[father], marriage[mother]);
            assert_eq!(fm.get("marriage_date"), mm.get("marriage_date"));
            assert!(
                text(fm, "marriage_date").unwrap() <= text(f, "birth_date").unwrap(),
                "{line}"
            );
        }
        assert!(
            with_parents * 10 > s.of("birth").len() * 9,
            "{with_parents}"
        );
    }

    #[test]
    fn tax_registration_uses_the_credit_code() {
        let s = sample();
        let market = s.by_key("market_registration");
        let tax = s.of("tax_registration");
        assert!(tax.len() * 10 > market.len() * 9);
        for line in tax {
            let f = fields(line);
            assert_eq!(text(f, "taxpayer_id"), Some(key(line)));
            let authority = text(f, "tax_authority").unwrap();
            assert!(
                authority.starts_with("国家税务总局") && authority.ends_with("税务局"),
                "{authority}"
            );
        }
        for (k, f) in market {
            let name = text(f, "name").unwrap();
            let region = REGIONS.iter().find(|r| r.code == &k[2..8]).unwrap();
            assert!(
                name.contains(region.city) || name.contains(&region.city[..region.city.len() - 3]),
                "{name}"
            );
            assert!(
                canonical(text(f, "registered_capital")).is_some()
                    || f.get("type").unwrap() == "branch"
            );
        }
    }

    fn canonical(s: Option<&str>) -> Option<String> {
        basedata_store::value::canonical_decimal(s?)
    }

    #[test]
    fn names_are_drawn_from_wide_lists() {
        let surnames: HashSet<_> = SURNAMES.iter().collect();
        let given: HashSet<_> = GIVEN.iter().collect();
        assert_eq!(surnames.len(), SURNAMES.len());
        assert!(surnames.len() >= 60);
        assert!(given.len() >= 150, "{}", given.len());
        assert_eq!(GIVEN_EITHER.1, GIVEN.len());
        let s = sample();
        let distinct: HashSet<&str> = s
            .of("hukou")
            .iter()
            .map(|l| text(fields(l), "name").unwrap())
            .collect();
        assert!(
            distinct.len() > s.of("hukou").len() / 2,
            "{}",
            distinct.len()
        );
        for n in distinct.iter().take(1000) {
            assert!((2..=4).contains(&n.chars().count()), "{n}");
        }
    }

    #[test]
    fn write_files_matches_generate() {
        let cfg = GenConfig {
            persons: 1_001,
            entities: 301,
            seed: 5,
        };
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("nested");
        let summary = write_files(&cfg, &Catalog::builtin(), &out).unwrap();
        let mut expected: HashMap<String, Vec<u8>> = HashMap::new();
        let summary2 = generate(&cfg, &Catalog::builtin(), &mut |ds, line| {
            let v = expected.entry(ds.to_owned()).or_default();
            v.extend_from_slice(line);
            v.push(b'\n');
            Ok(())
        })
        .unwrap();
        assert_eq!(summary, summary2);
        assert_eq!(
            summary.per_dataset.len(),
            Catalog::builtin().datasets().len()
        );
        for (ds, n) in &summary.per_dataset {
            let bytes = fs::read(out.join(format!("{ds}.ndjson"))).unwrap();
            assert_eq!(bytes, expected.get(ds).cloned().unwrap_or_default(), "{ds}");
            assert_eq!(bytes.iter().filter(|&&b| b == b'\n').count() as u64, *n);
        }
        assert_eq!(summary.per_dataset[0], ("hukou".to_owned(), 1_001));
    }

    #[test]
    fn empty_populations() {
        for (persons, entities) in [(0, 0), (1, 0), (0, 1), (3, 2)] {
            let cfg = GenConfig {
                persons,
                entities,
                seed: 1,
            };
            let catalog = Catalog::builtin();
            let lines = collect(&cfg, &catalog);
            check_lines(&catalog, &lines);
            assert_eq!(lines.get("hukou").map_or(0, Vec::len) as u64, persons);
        }
    }

    #[test]
    fn custom_catalogs_are_filled_by_type() {
        let toml = r#"
[[datasets]]
id = "hukou"
subject = "person"
title = "户籍"
provider = "gongan"
update_frequency = "realtime"
legal_basis = "b"
[[datasets.fields]]
name = "name"
title = "姓名"
type = "string"
share = "unconditional"
required = true
[[datasets.fields]]
name = "status"
title = "状态"
type = "code"
share = "unconditional"
codes = [{ value = "A", title = "a" }, { value = "B", title = "b" }]
required = true

[[datasets]]
id = "market_registration"
subject = "entity"
title = "企业"
provider = "shichang"
update_frequency = "realtime"
legal_basis = "b"
[[datasets.fields]]
name = "name"
title = "名称"
type = "string"
share = "unconditional"

[[datasets]]
id = "pets"
subject = "person"
title = "犬只登记"
provider = "p"
update_frequency = "working_days:5"
legal_basis = "b"
[[datasets.fields]]
name = "name"
title = "姓名"
type = "string"
share = "unconditional"
required = true
[[datasets.fields]]
name = "owner_since"
title = "登记时间"
type = "datetime"
share = "unconditional"
required = true
[[datasets.fields]]
name = "count"
title = "数量"
type = "integer"
share = "unconditional"
required = true
[[datasets.fields]]
name = "fee"
title = "费用"
type = "decimal"
share = "unconditional"
required = true
[[datasets.fields]]
name = "vaccinated"
title = "已免疫"
type = "bool"
share = "unconditional"
required = true
[[datasets.fields]]
name = "breed"
title = "品种"
type = "code"
share = "unconditional"
codes = [{ value = "x\"y", title = "quoted" }, { value = "z", title = "z" }]
required = true
[[datasets.fields]]
name = "neighbour_id"
title = "邻居"
type = "person_key"
share = "unconditional"
required = true
[[datasets.fields]]
name = "vet"
title = "兽医院"
type = "entity_key"
share = "unconditional"
required = true
[[datasets.fields]]
name = "picture"
title = "照片"
type = "bytes"
share = "conditional"
condition = "c"
legal_basis = "b"
required = true
[[datasets.fields]]
name = "cancel_date"
title = "注销日期"
type = "date"
share = "unconditional"
[[datasets.fields]]
name = "note"
title = "备注"
type = "string"
share = "none"
legal_basis = "b"

[[datasets]]
id = "depots"
subject = "entity"
title = "仓库"
provider = "p"
update_frequency = "quarterly"
legal_basis = "b"
[[datasets.fields]]
name = "manager_id"
title = "负责人"
type = "person_key"
share = "unconditional"
required = true
[[datasets.fields]]
name = "address"
title = "地址"
type = "string"
share = "unconditional"
"#;
        let catalog = Catalog::from_toml_str(toml).unwrap();
        let cfg = GenConfig {
            persons: 2_000,
            entities: 500,
            seed: 9,
        };
        let lines = collect(&cfg, &catalog);
        check_lines(&catalog, &lines);
        let pets = &lines["pets"];
        assert!((400..800).contains(&pets.len()), "{}", pets.len());
        assert!(lines["depots"].len() > 100);
        // Custom code lists are honoured, quotes escaped.
        assert!(pets.iter().any(|l| l["fields"]["breed"] == "x\"y"));
        assert!(lines["hukou"]
            .iter()
            .all(|l| matches!(l["fields"]["status"].as_str(), Some("A" | "B"))));
    }

    #[test]
    fn json_escaping() {
        for s in [
            "",
            "plain",
            "张三",
            "a\"b",
            "back\\slash",
            "tab\tnew\nline\r",
            "\u{1}\u{1f}x",
            "0123456789abcdef\"0123456789",
            "超过八个字节的中文\\",
        ] {
            let mut buf = Vec::new();
            buf.push(b'"');
            push_escaped(&mut buf, s);
            buf.push(b'"');
            assert_eq!(serde_json::from_slice::<String>(&buf).unwrap(), s);
        }
        for b in 0u8..128 {
            let s = format!("abcdefgh{}abcdefg", char::from(b));
            assert_eq!(
                needs_escape(s.as_bytes()),
                b < 0x20 || b == b'"' || b == b'\\',
                "{b}"
            );
            let s = format!("abc{}", char::from(b));
            assert_eq!(
                needs_escape(s.as_bytes()),
                b < 0x20 || b == b'"' || b == b'\\',
                "{b}"
            );
        }
        assert!(!needs_escape("中文名称不需要转义的长字符串".as_bytes()));
    }
}
