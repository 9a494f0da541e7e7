// Objective-C++ over seqedge::Engine (engine/seqedge_engine.h): C++ exceptions become NSError here and never
// cross into Swift.
#import "SeqedgeBridge.h"

#include <memory>
#include <string>
#include <vector>

#include "seqedge_engine.h"

NSErrorDomain const SeqedgeErrorDomain = @"SeqedgeErrorDomain";

static void SetError(NSError** error, const char* message) {
  if (error) {
    *error = [NSError errorWithDomain:SeqedgeErrorDomain
                                 code:1
                             userInfo:@{NSLocalizedDescriptionKey : [NSString stringWithUTF8String:message] ?: @"seqedge error"}];
  }
}

@implementation SeqedgeBridge {
  std::unique_ptr<seqedge::Engine> _engine;
}

- (nullable instancetype)initWithPath:(NSString*)path threads:(NSInteger)threads error:(NSError**)error {
  if ((self = [super init])) {
    try {
      _engine = std::make_unique<seqedge::Engine>(std::string(path.UTF8String), int(threads));
    } catch (const std::exception& e) {
      SetError(error, e.what());
      return nil;
    }
  }
  return self;
}

- (nullable NSArray<NSNumber*>*)encode:(NSString*)text chat:(BOOL)chat error:(NSError**)error {
  try {
    NSMutableArray<NSNumber*>* out = [NSMutableArray array];
    for (int64_t id : _engine->encode(std::string(text.UTF8String), chat)) [out addObject:@(id)];
    return out;
  } catch (const std::exception& e) {
    SetError(error, e.what());
    return nil;
  }
}

- (int64_t)prefill:(NSArray<NSNumber*>*)tokens error:(NSError**)error {
  std::vector<int64_t> ids;
  for (NSNumber* n in tokens) ids.push_back(n.longLongValue);
  try {
    return _engine->prefill(ids);
  } catch (const std::exception& e) {
    SetError(error, e.what());
    return -1;
  }
}

- (int64_t)decode:(int64_t)token error:(NSError**)error {
  try {
    return _engine->decode(token);
  } catch (const std::exception& e) {
    SetError(error, e.what());
    return -1;
  }
}

- (NSData*)pieceAfter:(int64_t)previous token:(int64_t)token {
  const std::string piece = _engine->piece(previous, token);
  return [NSData dataWithBytes:piece.data() length:piece.size()];
}

- (BOOL)isEos:(int64_t)token {
  return _engine->is_eos(token);
}

- (NSArray<NSNumber*>*)eosIds {
  NSMutableArray<NSNumber*>* out = [NSMutableArray array];
  for (int64_t id : _engine->eos_ids()) [out addObject:@(id)];
  return out;
}

- (NSArray<NSNumber*>*)stateSizes {
  NSMutableArray<NSNumber*>* out = [NSMutableArray array];
  for (int64_t n : _engine->state_sizes()) [out addObject:@(n)];
  return out;
}

- (void)reset {
  _engine->reset();
}

@end
