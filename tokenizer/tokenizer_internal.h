// Shared between the tokenizer's .cpp files; not part of the public API.
#pragma once
#include <memory>

#include "tokenizer/tokenizer.h"

namespace llm {

std::shared_ptr<TokenizerCache> tokenizer_cache_new();

}  // namespace llm
