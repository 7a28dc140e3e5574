//! Chinese and mixed-language queries with the real multilingual-e5-small. The query is
//! "我要买一双耐克运动鞋" (I want to buy a pair of Nike sports shoes), over a mixed Chinese and
//! English catalogue. It is served with mean pooling, then with a head trained on synthetic
//! queries where brand and product decide.

mod common;

use std::fmt::Write as _;

use attnrec::config::Settings;
use attnrec::train::{train, TrainOptions};
use common::{real_e5_model_dir, TestServer};
use serde_json::{json, Value};

/// (Chinese brand, id part)
const BRANDS: [(&str, &str); 6] = [("耐克", "nike"), ("阿迪达斯", "adidas"), ("李宁", "lining"), ("安踏", "anta"), ("彪马", "puma"), ("匡威", "converse")];
/// (Chinese product, id part)
const PRODUCTS: [(&str, &str); 6] = [("运动鞋", "sneakers"), ("帽子", "cap"), ("背包", "backpack"), ("外套", "jacket"), ("袜子", "socks"), ("手表", "watch")];
/// Items in English and other kinds of Chinese items, so the catalogue is mixed.
const OTHER_ITEMS: [(&str, &str); 6] = [
    ("kettle-en", "Red electric kettle 1.7 L"),
    ("drill-en", "Cordless drill with two batteries"),
    ("lamp-en", "White LED desk lamp"),
    ("kettle-zh", "苏泊尔电水壶 不锈钢 1.7升"),
    ("phone-zh", "小米 Redmi 手机 128GB"),
    ("toy-zh", "乐高 积木 儿童玩具"),
];
/// Query templates: `{b}` brand, `{p}` product, `{d}` a product the shopper does not want.
const TEMPLATES: [&str; 10] = [
    "请帮我找一下{b}的{p}，谢谢",
    "有没有好看的{b}{p}推荐一下",
    "想给孩子买{b}{p}",
    "{b}{p}哪款比较好",
    "最近想入手{b}{p}",
    "不要{d}，我想要{b}{p}",
    "已经有{d}了，再买个{b}{p}",
    "帮我看看{b}{p}有什么新款",
    "周末打折的{b}{p}",
    "送朋友的礼物，{b}{p}",
];
const QUERY: &str = "我要买一双耐克运动鞋";

fn settings(dir: &std::path::Path) -> Settings {
    let mut settings = Settings::default();
    settings.model.source = real_e5_model_dir().display().to_string();
    settings.model.profile = "multilingual-e5-small".into();
    settings.model.max_tokens = 64;
    settings.data_dir = dir.join("data");
    settings.index.search_threads = 2;
    settings
}

/// Writes the catalogue and judgments (the item a query names is relevant, grade 1; the same
/// product of two other brands is judged irrelevant, grade 0).
fn write_files(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let mut catalog = String::from("id,title\n");
    let mut judgments = String::from("query,id,relevance\n");
    for (brand_index, (brand, brand_id)) in BRANDS.iter().enumerate() {
        for (product_index, (product, product_id)) in PRODUCTS.iter().enumerate() {
            writeln!(catalog, "{brand_id}-{product_id},{brand}{product}").unwrap();
            let unwanted = PRODUCTS[(product_index + 1) % PRODUCTS.len()].0;
            for template in TEMPLATES {
                let query = template.replace("{b}", brand).replace("{p}", product).replace("{d}", unwanted);
                writeln!(judgments, "{query},{brand_id}-{product_id},1").unwrap();
                for offset in 1..3 {
                    let other = BRANDS[(brand_index + offset) % BRANDS.len()].1;
                    writeln!(judgments, "{query},{other}-{product_id},0").unwrap();
                }
            }
        }
    }
    for (id, title) in OTHER_ITEMS {
        writeln!(catalog, "{id},{title}").unwrap();
    }
    let paths = (dir.join("catalog.csv"), dir.join("judgments.csv"));
    std::fs::write(&paths.0, catalog).unwrap();
    std::fs::write(&paths.1, judgments).unwrap();
    paths
}

/// Asks the server for the top items with an explanation; returns the ids and the words
/// ordered by weight.
async fn ask(server: &TestServer) -> (Vec<String>, Vec<(String, f64)>) {
    let (status, body) = server.recommend(json!({"query": QUERY, "k": 5, "explain": true})).await;
    assert_eq!(status, 200, "{body}");
    let ids = body["items"].as_array().unwrap().iter().map(|item| item["id"].as_str().unwrap().to_string()).collect();
    let mut words: Vec<(String, f64)> =
        body["explain"]["tokens"].as_array().unwrap().iter().map(|word: &Value| (word["text"].as_str().unwrap().to_string(), word["weight"].as_f64().unwrap())).collect();
    words.sort_by(|a, b| b.1.total_cmp(&a.1));
    (ids, words)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chinese_query_finds_nike_sneakers() {
    let dir = tempfile::tempdir().unwrap();
    let (catalog, judgments) = write_files(dir.path());
    let settings = settings(dir.path());

    attnrec::indexer::build_data_dir(&settings, &catalog, None).await.unwrap();
    let server = TestServer::start(&settings).await;
    let (ids, words) = ask(&server).await;
    println!("mean pooling: top 5 {ids:?}; words by weight {words:?}");
    assert_eq!(ids[0], "nike-sneakers");
    let explained: Vec<&str> = words.iter().map(|(word, _)| word.as_str()).collect();
    assert!(explained.contains(&"耐克"), "{explained:?}");
    assert!(explained.contains(&"运动鞋"), "{explained:?}");
    drop(server);

    let head = dir.path().join("head.safetensors");
    let options = TrainOptions { max_epochs: 20, patience: 5, cache_dir: dir.path().join("cache"), ..TrainOptions::default() };
    let train_settings = settings.clone();
    let train_head = head.clone();
    let report = tokio::task::spawn_blocking(move || train(&train_settings, &catalog, &judgments, &train_head, &options)).await.unwrap().unwrap();
    println!("trained: validation nDCG@10 {:.3} (untrained {:.3})", report.best_validation_ndcg_at_10, report.baseline_validation_ndcg_at_10);

    let catalog = dir.path().join("catalog.csv");
    attnrec::indexer::build_data_dir(&settings, &catalog, Some(&head)).await.unwrap();
    let server = TestServer::start(&settings).await;
    let (ids, words) = ask(&server).await;
    println!("trained head: top 5 {ids:?}; words by weight {words:?}");
    assert_eq!(ids[0], "nike-sneakers");
    let top_two: Vec<&str> = words.iter().take(2).map(|(word, _)| word.as_str()).collect();
    assert!(top_two.contains(&"耐克"), "{words:?}");
    assert!(top_two.contains(&"运动鞋"), "{words:?}");
}
