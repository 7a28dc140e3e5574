//! Checks with the real all-MiniLM-L6-v2 weights (fetched by scripts/fetch-models.sh).

mod common;

use attnrec::config::Settings;
use attnrec::encoder::{Encoder, ModelSource, TextKind};
use attnrec::pooling::AttentionHead;
use attnrec::service::{QueryInput, Recommender};
use candle_core::Device;
use common::{cosine, real_model_dir};

fn real_settings(data_dir: &std::path::Path) -> Settings {
    let mut settings = Settings::default();
    settings.data_dir = data_dir.to_path_buf();
    settings.model.source = real_model_dir().display().to_string();
    settings
}

#[test]
fn batch_embedding_equals_single() {
    let files = ModelSource::Directory(real_model_dir()).resolve().unwrap();
    let encoder = Encoder::load(&files, 128, Device::Cpu).unwrap();
    let head = AttentionHead::untrained(encoder.hidden_size(), &Device::Cpu).unwrap();
    let tokenizer = encoder.tokenizer();

    let short = tokenizer.tokenize("I want a pair of Nike running shoes", TextKind::Query).unwrap();
    let long_a = tokenizer.tokenize(&"a much longer text about garden hoses, kettles and lamps ".repeat(6), TextKind::Query).unwrap();
    let long_b = tokenizer.tokenize("another longer sentence that pads the short one in the batch by many tokens", TextKind::Query).unwrap();
    assert!(short.len() < long_a.len());
    assert!(short.len() < long_b.len());

    let alone = encoder.forward(&[&short]).unwrap();
    let batched = encoder.forward(&[&long_a, &short, &long_b]).unwrap();

    let item_alone = head.pool_items(&alone).unwrap().to_vec2::<f32>().unwrap();
    let item_batched = head.pool_items(&batched).unwrap().to_vec2::<f32>().unwrap();
    let item_cosine = cosine(&item_alone[0], &item_batched[1]);
    assert!(item_cosine > 0.9999, "item pooling cosine {item_cosine}");

    let query_alone = head.pool_queries(&alone).unwrap().vectors.to_vec2::<f32>().unwrap();
    let query_batched = head.pool_queries(&batched).unwrap().vectors.to_vec2::<f32>().unwrap();
    let query_cosine = cosine(&query_alone[0], &query_batched[1]);
    assert!(query_cosine > 0.9999, "query pooling cosine {query_cosine}");
}

#[test]
fn packaged_padding_is_overridden() {
    let files = ModelSource::Directory(real_model_dir()).resolve().unwrap();
    let encoder = Encoder::load(&files, 128, Device::Cpu).unwrap();
    let tokens = encoder.tokenizer().tokenize("red kettle", TextKind::Query).unwrap();
    assert_eq!(tokens.len(), 4, "[CLS] red kettle [SEP], not padded to 128");
}

#[tokio::test]
async fn small_catalogue_ranks_the_obvious_item_first() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = dir.path().join("products.csv");
    std::fs::write(
        &catalog,
        "id,title\n\
         shoes,Nike Air Zoom running shoes for men\n\
         kettle,Stainless steel electric kettle 1.7 litre\n\
         drill,Cordless power drill with two batteries\n\
         book,Harry Potter and the Philosopher's Stone\n\
         scarf,Red wool winter scarf\n\
         lamp,LED desk lamp with adjustable arm\n\
         hose,Expandable garden hose 30 m\n\
         tent,\"Four-person camping tent, waterproof\"\n",
    )
    .unwrap();
    let settings = real_settings(&dir.path().join("data"));
    attnrec::indexer::build_data_dir(&settings, &catalog, None).await.unwrap();
    let recommender = std::sync::Arc::new(Recommender::open(&settings).await.unwrap());
    while !recommender.is_ready() {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    let cases = [
        ("I want a pair of Nike running shoes", "shoes"),
        ("something to boil water for tea", "kettle"),
        ("a tool to put screws into the wall", "drill"),
        ("a fantasy novel about a young wizard", "book"),
        ("keep my neck warm in winter", "scarf"),
        ("where to sleep when camping outdoors", "tent"),
    ];
    for (query, expected) in cases {
        let request = recommender.validate(QueryInput::text(query, 3)).unwrap();
        let result = recommender.recommend(request).await.unwrap();
        assert_eq!(result.items[0].id, expected, "query {query:?} ranked {:?}", result.items);
    }
}

#[tokio::test]
async fn demo_catalogue_puts_the_hobbit_first() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/goodbooks-10k.csv");
    let settings = real_settings(&dir.path().join("data"));
    attnrec::indexer::build_data_dir(&settings, &catalog, None).await.unwrap();
    let recommender = std::sync::Arc::new(Recommender::open(&settings).await.unwrap());
    while !recommender.is_ready() {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    let input = QueryInput { explain: true, ..QueryInput::text("hobbit goes on a journey to destroy a ring", 5) };
    let request = recommender.validate(input).unwrap();
    let result = recommender.recommend(request).await.unwrap();
    assert_eq!(result.items[0].title, "The Hobbit", "{:?}", result.items);
    let words = result.explain.unwrap();
    assert_eq!(words.len(), 9, "one weight per word of the query");
}
