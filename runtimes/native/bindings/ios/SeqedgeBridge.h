// The Objective-C face of seqedge::Engine for Swift (SeqedgeModel.swift). Errors come back as NSError
// (domain SeqedgeErrorDomain, the engine's one-line message as the localized description).
#import <Foundation/Foundation.h>

NS_ASSUME_NONNULL_BEGIN

extern NSErrorDomain const SeqedgeErrorDomain;

@interface SeqedgeBridge : NSObject

- (nullable instancetype)initWithPath:(NSString*)path threads:(NSInteger)threads error:(NSError**)error;
- (nullable NSArray<NSNumber*>*)encode:(NSString*)text chat:(BOOL)chat error:(NSError**)error;
// The greedy next token, or -1 with *error set.
- (int64_t)prefill:(NSArray<NSNumber*>*)tokens error:(NSError**)error;
- (int64_t)decode:(int64_t)token error:(NSError**)error;
- (NSData*)pieceAfter:(int64_t)previous token:(int64_t)token;
- (BOOL)isEos:(int64_t)token;
- (NSArray<NSNumber*>*)eosIds;
- (NSArray<NSNumber*>*)stateSizes;
- (void)reset;

@end

NS_ASSUME_NONNULL_END
